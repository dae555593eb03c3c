"""``hems-client data export``: everything this HEMS sent to the DSO, for the household to see and take (GDPR
access and portability).

The document (JSON) holds the contract the HEMS runs under, the capacity needs the DSO accepted, and every OpenADR
message the VEN sent but polls (which carry only the venID): when, to which service, whether the VTN answered, the
XML exactly as sent, and its content parsed (reports decoded into the profile's terms). It is built from the HEMS's
own store (``--db``), where the VEN logs each message as it sends it (``HemsStore.log_message``).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from hems_client.store import HemsStore
from hems_client.transport.oadr20b.openleadr_adapter import RefusedAnswer, parse_answer
from protocol.errors import ProfileError
from protocol.oadr20b import decode_report

FORMAT = "hems-dso-interface/hems-export/1"
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""The guard's size limit for a message read back from the log (the HEMS's own messages are far smaller)."""


def _plain(value: Any) -> Any:
    """The parsed message as JSON: datetimes and durations as ISO text."""
    return json.loads(json.dumps(value, default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v)))


def _content(message_type: str, xml: str) -> dict[str, Any]:
    try:
        _, _, payload = parse_answer(xml.encode("utf-8"), max_bytes=MAX_MESSAGE_BYTES)
    except RefusedAnswer as error:  # a message this HEMS sent should parse; show why if one does not
        return {"unreadable": str(error)}
    content: dict[str, Any] = {"parsed": _plain(payload)}
    if message_type == "oadrUpdateReport":
        decoded = []
        for report in payload.get("reports") or []:
            try:
                model = decode_report(report)
                decoded.append({"report_name": report.get("report_name"), "kind": type(model).__name__,
                                "data": model.model_dump(mode="json")})
            except ProfileError as error:
                decoded.append({"report_name": report.get("report_name"), "invalid": str(error)})
        content["reports"] = decoded
    return content


def export_document(store: HemsStore, *, exported_at: datetime) -> dict[str, Any]:
    """Everything the store says this HEMS sent to the DSO."""
    contract = store.load_contract()
    return {
        "format": FORMAT,
        "exported_at": exported_at.isoformat(),
        "connection_point_id": contract.connection_point_id if contract is not None else None,
        "contract": contract.model_dump(mode="json") if contract is not None else None,
        "capacity_needs": {day.isoformat(): need.model_dump(mode="json")
                           for day, need in store.load_needs().items()},
        "messages": [{**{k: v for k, v in message.items() if k != "xml"},
                      "content": _content(message["message_type"], message["xml"]), "xml": message["xml"]}
                     for message in store.sent_messages()],
    }
