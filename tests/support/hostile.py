"""A corpus of hostile and malformed requests to a VTN, each with the answer a careful VTN gives.

Used in-process (``tests/test_dso_vtn_hostile.py``: exact status and words) and against a real ``dso-server serve``
process (``tests/test_dso_vtn_fuzz.py``: alive, no 5xx, store unchanged). ``{ven_id}`` in a body is replaced by a
registered venID, ``{other_ven_id}`` by the venID of another household.
"""

from __future__ import annotations

from dataclasses import dataclass, field

XML = "application/xml"
OADR = 'xmlns:oadr="http://openadr.org/oadr-2.0b/2012/07"'
EI = 'xmlns:ei="http://docs.oasis-open.org/ns/energyinterop/201110"'


def poll(ven_id: str = "{ven_id}", *, prolog: str = '<?xml version="1.0" encoding="utf-8"?>\n',
         namespace: str = OADR) -> str:
    return (f'{prolog}<oadr:oadrPayload {namespace}><oadr:oadrSignedObject {namespace} oadr:Id="oadrSignedObject">'
            f'<oadr:oadrPoll ei:schemaVersion="2.0b" {EI}><ei:venID>{ven_id}</ei:venID></oadr:oadrPoll>'
            "</oadr:oadrSignedObject></oadr:oadrPayload>")


_BILLION_LAUGHS = ('<!DOCTYPE lolz [<!ENTITY lol "lol">'
                   + "".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'
                             for i in range(1, 10))
                   + "]>")


@dataclass(frozen=True)
class Hostile:
    name: str
    body: bytes
    status: int
    """The HTTP status a careful VTN answers."""
    words: tuple[str, ...]
    """Words the answer must contain (case-insensitive): the problem named."""
    service: str = "OadrPoll"
    content_type: str | None = XML
    response_code: int | None = None
    """For an HTTP 200: the eiResponse responseCode expected."""
    headers: dict[str, str] = field(default_factory=dict)


def _b(text: str) -> bytes:
    return text.encode("utf-8")


def corpus(max_message_bytes: int) -> list[Hostile]:
    entity = _b(poll("&x;", prolog='<?xml version="1.0" encoding="utf-8"?>\n<!DOCTYPE oadrPayload '
                                   '[<!ENTITY x "{ven_id}">]>\n'))
    return [
        # Declarations: what crashed lxml/libxml2 (entity) and what could make a parser read or expand things.
        Hostile("internal entity (segfaults lxml 5.4-6.2 under schema validation)", entity, 400, ("DOCTYPE",)),
        Hostile("billion laughs", _b(poll("&lol9;", prolog=_BILLION_LAUGHS)), 400, ("DOCTYPE",)),
        Hostile("external entity (file)", _b(poll("&xxe;", prolog='<!DOCTYPE p [<!ENTITY xxe SYSTEM '
                                                             '"file:///etc/passwd">]>')), 400, ("DOCTYPE",)),
        Hostile("external entity (network)", _b(poll("&xxe;", prolog='<!DOCTYPE p [<!ENTITY xxe SYSTEM '
                                                                '"http://127.0.0.1:9/x">]>')), 400, ("DOCTYPE",)),
        Hostile("parameter entity", _b(poll(prolog='<!DOCTYPE p [<!ENTITY % pe SYSTEM "file:///etc/passwd"> %pe;]>')),
                400, ("DOCTYPE",)),
        Hostile("external DTD", _b(poll(prolog='<!DOCTYPE p SYSTEM "http://127.0.0.1:9/oadr.dtd">')), 400,
                ("DOCTYPE",)),
        Hostile("lowercase doctype", _b(poll(prolog="<!doctype p>")), 400, ("declaration",)),
        Hostile("XInclude", _b(poll('<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="/etc/passwd" '
                                    'parse="text"/>')), 400, ("XInclude",)),
        Hostile("processing instruction", _b(poll(prolog='<?xml version="1.0"?><?xml-stylesheet href="x.xsl"?>')),
                400, ("processing instruction",)),
        Hostile("UTF-16 document", poll().encode("utf-16"), 400, ("UTF-8",)),
        Hostile("UTF-7 declared", _b(poll(prolog='<?xml version="1.0" encoding="UTF-7"?>')), 400, ("UTF-7",)),
        Hostile("invalid UTF-8", _b(poll()).replace(b"{ven_id}", b"\xff\xfe{ven_id}"), 400, ("UTF-8",)),
        # Malformed or not OpenADR.
        Hostile("truncated", _b(poll())[:150], 400, ("not valid OpenADR",)),
        Hostile("empty body", b"", 400, ("not valid OpenADR",)),
        Hostile("not XML", b"hello, VTN", 400, ("not valid OpenADR",)),
        Hostile("JSON", b'{"oadrPoll": {"venID": "x"}}', 400, ("not valid OpenADR",)),
        Hostile("wrong namespace", _b(poll(namespace='xmlns:oadr="http://openadr.org/oadr-2.0a/2012/07"')), 400,
                ("not valid OpenADR",)),
        Hostile("bare message without oadrPayload", _b(
            f'<oadr:oadrPoll {OADR} ei:schemaVersion="2.0b" {EI}><ei:venID>{{ven_id}}</ei:venID></oadr:oadrPoll>'),
            400, ("oadrPayload",)),
        Hostile("deep nesting", _b("<a>" * 5_000 + "</a>" * 5_000), 400, ("not valid OpenADR",)),
        # HTTP level.
        Hostile("no Content-Type", _b(poll()), 415, ("Content-Type",), content_type=None),
        Hostile("text/plain", _b(poll()), 415, ("application/xml",), content_type="text/plain"),
        Hostile("form post", b"venID=x", 415, ("application/xml",),
                content_type="application/x-www-form-urlencoded"),
        Hostile("latin-1 charset", _b(poll()), 415, ("UTF-8",), content_type="application/xml; charset=iso-8859-1"),
        Hostile("oversized", _b(poll()) + b" " * (max_message_bytes + 1), 413, ("bytes",)),
        # OpenADR level: schema-valid, refused in the answer.
        Hostile("oadrPoll at EiEvent", _b(poll()), 200, ("not served",), service="EiEvent", response_code=459),
    ]
