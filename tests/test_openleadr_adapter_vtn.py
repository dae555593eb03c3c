"""One test per piece of openleadr the VTN relies on beyond its documented API
(``dso_server/transport/oadr20b/openleadr_adapter.py``): an openleadr or lxml upgrade that breaks one shows here."""

from __future__ import annotations

import subprocess
import sys

from support.hostile import poll

ENTITY_POLL = poll("&x;", prolog='<?xml version="1.0" encoding="utf-8"?>\n<!DOCTYPE oadrPayload '
                                 '[<!ENTITY x "ven-1">]>\n')

_PROBE = """
import sys
from lxml import etree
from dso_server.transport.oadr20b import openleadr_adapter
from openleadr import messaging
openleadr_adapter.harden_xml_parser()
assert openleadr_adapter.xml_parser_is_hardened()
try:
    tree = messaging.validate_xml_schema(sys.stdin.buffer.read())
except etree.XMLSyntaxError as error:
    print("refused", error)
else:
    print("parsed; venID text:", repr(tree.findtext(".//{http://docs.oasis-open.org/ns/energyinterop/201110}venID")))
"""


def test_the_hardened_parser_survives_an_entity_even_without_the_guard() -> None:
    """The guard refuses DOCTYPEs before parsing; should anything ever reach openleadr's validation without it,
    the installed lxml must not crash (lxml 5.4-6.2 segfault here with openleadr's own parser) nor expand."""
    probe = subprocess.run([sys.executable, "-c", _PROBE], input=ENTITY_POLL.encode(), capture_output=True,
                           timeout=60)
    assert probe.returncode == 0, (probe.returncode, probe.stderr.decode()[-2000:])
    assert b"ven-1" not in probe.stdout, probe.stdout  # the entity was not expanded
