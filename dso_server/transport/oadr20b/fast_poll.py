"""The fast path of the VTN's most frequent message: an oadrPoll to which the answer is "nothing new".

Nearly every message a VTN receives is an oadrPoll, and nearly every answer is the same oadrResponse for that
VEN. The general path (schema check, then openleadr's dict parser, the handler, openleadr's template renderer)
spends most of its time in the dict parser and the renderer. This path instead:

* takes only an oadrPoll whose bytes carry no DTD, entity, comment or processing instruction beyond the XML
  declaration, validates it against the 2.0b XSD with a parser that resolves nothing, and reads the venID from
  the tree (``parse_poll``; a signed poll goes on to the signature check and the handler without openleadr's
  dict parser, the only thing an oadrPoll's payload needs being its venID);
* answers, when the VEN's cached state (``ven_cache.VenState``) says nothing is due, with that VEN's oadrResponse
  rendered once by the VTN's message writer and kept with the cached state (``DsoVtn.quiet_poll``); a signing
  VTN signs that kept answer afresh for each poll.

Everything else (another message, a poll signed when the VTN does not require signatures or unsigned when it
does, a poll that must deliver events or changes what was delivered, an unknown or unregistered VEN) takes the
general path, which answers it exactly as before; so the two paths cannot disagree on anything but speed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lxml import etree

from dso_server.transport.oadr20b.openleadr_adapter import XML_SCHEMA

OADR = "{http://openadr.org/oadr-2.0b/2012/07}"
DSIG = "{http://www.w3.org/2000/09/xmldsig#}"
EI = "{http://docs.oasis-open.org/ns/energyinterop/201110}"
MAX_POLL_BYTES = 24 * 1024
"""A plain oadrPoll is under 1 KiB; a signed one carries its certificate (and maybe a chain: 3 to 20 KiB)."""
_PARSER = etree.XMLParser(schema=XML_SCHEMA, resolve_entities=False, load_dtd=False, no_network=True,
                          huge_tree=False, remove_comments=False)


@dataclass(frozen=True)
class Poll:
    ven_id: str
    tree: Any
    """The validated document (for the signature check of a signed poll)."""
    signed: bool
    """It carries a ds:Signature beside its oadrSignedObject."""


def parse_poll(body: bytes) -> Poll | None:
    """A schema-valid oadrPoll with a venID, signed or not; None for anything else (the general path takes it)."""
    if len(body) > MAX_POLL_BYTES or b"oadrPoll" not in body or b"<!" in body or body.count(b"<?") > 1:
        return None
    try:
        root = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError:
        return None
    if root.tag != f"{OADR}oadrPayload" or len(root) not in (1, 2):
        return None
    signed = root[-1]  # a signed message: ds:Signature, then the oadrSignedObject (PROFILE §12.5)
    if signed.tag != f"{OADR}oadrSignedObject" or len(signed) != 1 or signed[0].tag != f"{OADR}oadrPoll":
        return None
    if len(root) == 2 and root[0].tag != f"{DSIG}Signature":
        return None
    ven_id = signed[0].findtext(f"{EI}venID")
    return Poll(ven_id, root, len(root) == 2) if ven_id else None


def poll_ven_id(body: bytes) -> str | None:
    """The venID of a plain (unsigned), schema-valid oadrPoll; None for anything else."""
    poll = parse_poll(body)
    return poll.ven_id if poll is not None and not poll.signed else None
