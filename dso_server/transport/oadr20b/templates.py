"""A corrected openleadr message template: a refused registration carries no venID and no registrationID.

openleadr 0.5.36 renders ``oadrCreatedPartyRegistration`` with empty ``<ei:registrationID />`` and
``<ei:venID />`` elements when there is no id to give. PROFILE.md §2.3 wants a refusal (responseCode 463)
without either element; the 2.0b schema makes both optional. ``install()`` puts a copy of openleadr's template
that leaves the empty elements out in front of openleadr's template loader. That loader is process-wide (its
``create_message`` reads one global template environment), so the fix is too; it changes nothing else: an
accepted registration renders exactly as before (``tests/test_dso_vtn.py`` compares the two).
"""

from __future__ import annotations

from jinja2 import BaseLoader, ChoiceLoader, DictLoader
from openleadr import messaging

_NAME = "oadrCreatedPartyRegistration.xml"
_EMPTY_IDS = (
    ("{% else %}\n    <ei:registrationID />\n    {% endif %}", "{% endif %}"),
    ("{% else %}\n    <ei:venID />\n    {% endif %}", "{% endif %}"),
)


def _corrected(loader: BaseLoader) -> str:
    source, _, _ = loader.get_source(messaging.TEMPLATES, _NAME)
    for empty, kept in _EMPTY_IDS:
        if empty not in source:
            raise RuntimeError(f"openleadr's {_NAME} changed; review dso_server/transport/oadr20b/templates.py")
        source = source.replace(empty, kept)
    return source


def install() -> None:
    """Idempotent: install the corrected template once per process."""
    env = messaging.TEMPLATES
    if isinstance(env.loader, ChoiceLoader):
        return
    assert env.loader is not None
    env.loader = ChoiceLoader([DictLoader({_NAME: _corrected(env.loader)}), env.loader])
    if env.cache is not None:
        env.cache.clear()
