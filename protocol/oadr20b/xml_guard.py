"""What an OpenADR 2.0b document may contain before any XML parser sees it (PROFILE §12.4).

libxml2 expands what a document declares in its DOCTYPE (entities, default attributes) while lxml
parses, and it does so inside the schema-validating parse that openleadr runs on every message. That path has
crashed the whole process: lxml 5.4.0 to 6.2.0 (libxml2 2.13/2.14) segfault when a schema-validating parser
meets an internal entity that is used (measured; no lxml release fixes it). OpenADR messages need none of it,
so a document is refused on its bytes, before lxml or expat reads it, when it

- is larger than the receiver allows (``DocumentTooLarge``);
- is not UTF-8 (a BOM or an ``encoding`` other than UTF-8 could hide the markup below from this byte check);
- contains any markup declaration ``<!...`` other than a comment or a CDATA section (DOCTYPE, ENTITY, ...);
- contains a processing instruction other than the leading XML declaration;
- uses the XInclude namespace (nothing here resolves XInclude; refusing it keeps it that way for every
  parser the message may later reach).

Pure: bytes in, an exception with a readable reason out. Costs one pass over the bytes.
"""

from __future__ import annotations

import re

MAX_MESSAGE_BYTES = 1024 * 1024
"""Default limit for a message a VEN sends (the largest, a 96-interval plan report, is about 60 KiB)."""
MAX_ANSWER_BYTES = 8 * 1024 * 1024
"""Default limit for an answer a VTN sends: an oadrDistributeEvent carries all of a VEN's events."""

XINCLUDE_NAMESPACE = b"http://www.w3.org/2001/XInclude"
_UTF16_32_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")
_UTF8_BOM = b"\xef\xbb\xbf"
_DECLARATION = re.compile(rb"<\?xml(?P<attributes>[^?]*)\?>")
_ENCODING = re.compile(rb"""encoding\s*=\s*["'](?P<name>[^"']*)["']""")
_MARKUP = re.compile(rb"<!(?!--|\[CDATA\[)(?P<what>[A-Za-z]*)")
_INSTRUCTION = re.compile(rb"<\?(?P<target>[^\s?>]*)")


class HostileXml(ValueError):
    """The document is refused before parsing; ``reason`` says why in words an operator understands."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class DocumentTooLarge(HostileXml):
    def __init__(self, size_bytes: int, max_bytes: int) -> None:
        self.size_bytes = size_bytes
        self.max_bytes = max_bytes
        super().__init__(f"the message has {size_bytes} bytes; at most {max_bytes} are accepted")


def check_document(body: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> None:
    """Raise ``HostileXml`` (or ``DocumentTooLarge``) unless ``body`` is a plain UTF-8 XML document without
    declarations, processing instructions or XInclude."""
    if len(body) > max_bytes:
        raise DocumentTooLarge(len(body), max_bytes)
    if body.startswith(_UTF16_32_BOMS):
        raise HostileXml("the message is not UTF-8 (it starts with a UTF-16/32 byte order mark); OpenADR messages "
                         "are UTF-8")
    text = body.removeprefix(_UTF8_BOM)
    nul = text.find(b"\x00")
    if nul >= 0:
        raise HostileXml(f"the message contains a NUL byte at offset {nul}; XML forbids it (a UTF-16 document looks "
                         "like this)")
    try:
        text.decode("utf-8")
    except UnicodeDecodeError as error:
        raise HostileXml(f"the message is not valid UTF-8 (byte {error.start}: {error.reason})") from None
    start = len(text) - len(text.lstrip())
    declaration = _DECLARATION.match(text, start) if text.startswith(b"<?xml", start) else None
    if declaration is not None:
        encoding = _ENCODING.search(declaration["attributes"])
        if encoding is not None and encoding["name"].lower().replace(b"_", b"-") not in (b"utf-8", b"utf8"):
            raise HostileXml(f"the XML declaration names encoding {encoding['name'].decode('ascii', 'replace')!r}; "
                             "OpenADR messages are UTF-8")
    markup = _MARKUP.search(text)
    if markup is not None:
        what = markup["what"].decode("ascii") or text[markup.start():markup.start() + 12].decode("utf-8", "replace")
        raise HostileXml(f"the message contains a {what} declaration at offset {markup.start()}; DOCTYPE, ENTITY "
                         "and other declarations are not accepted (they let a document expand itself)")
    for instruction in _INSTRUCTION.finditer(text):
        if declaration is not None and instruction.start() == declaration.start():
            continue
        target = instruction["target"].decode("utf-8", "replace")[:40]
        raise HostileXml(f"the message contains the processing instruction <?{target} at offset "
                         f"{instruction.start()}; only the leading XML declaration is accepted")
    if XINCLUDE_NAMESPACE in text:
        raise HostileXml("the message uses the XInclude namespace (http://www.w3.org/2001/XInclude); it is not "
                         "accepted")
