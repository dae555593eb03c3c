"""``protocol.oadr20b.xml_guard``: what a 2.0b document may contain before a parser sees it."""

from __future__ import annotations

import pytest
from openleadr.messaging import create_message
from support.hostile import corpus, poll

from protocol.oadr20b.xml_guard import DocumentTooLarge, HostileXml, check_document

REFUSED_BY_THE_GUARD = [case for case in corpus(4096) if case.status == 400 and case.words[0] != "not valid OpenADR"
                        and case.words[0] != "oadrPayload"]


def test_real_messages_pass() -> None:
    for message in (create_message("oadrPoll", ven_id="ven-1"), poll("ven-1"), poll("ven-1", prolog=""),
                    "\ufeff" + poll("ven-1"), poll("ven-1", prolog="<?xml version='1.0' encoding='UTF-8'?>"),
                    poll("<!-- a comment --><![CDATA[x]]>ven-1")):
        check_document(message.encode("utf-8"))


@pytest.mark.parametrize("case", REFUSED_BY_THE_GUARD, ids=lambda case: case.name)
def test_hostile_documents_are_refused_naming_the_problem(case) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(HostileXml) as refused:
        check_document(case.body, max_bytes=4096)
    assert all(word.lower() in refused.value.reason.lower() for word in case.words), refused.value.reason


def test_size_is_checked_first() -> None:
    with pytest.raises(DocumentTooLarge, match="4097 bytes; at most 4096"):
        check_document(b"<!DOCTYPE" + b" " * 4088, max_bytes=4096)
    check_document(poll("v").encode() + b" " * (4096 - len(poll("v"))), max_bytes=4096)


def test_every_declaration_is_refused_but_comments_and_cdata_are_not() -> None:
    for declaration in ("<!DOCTYPE a>", "<!ENTITY a 'b'>", "<!ELEMENT a ANY>", "<!ATTLIST a b CDATA #IMPLIED>",
                        "<!NOTATION n SYSTEM 'x'>", "<![INCLUDE[", "<!"):
        with pytest.raises(HostileXml, match="declaration"):
            check_document(poll("v", prolog=declaration).encode())
    check_document(poll("<![CDATA[<a>]]><!---->v").encode())
