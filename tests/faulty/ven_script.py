"""A faulty VEN speaking raw OpenADR 2.0b XML; run as ``python ven_script.py MODE VTN_URL EAN START SPEED``.

``silent``: registers and polls, but never requests events, never answers them and never reports.
``greedy``: behaves, except that it opts in to every event (also out-of-profile ones) and reports a constant
4 kW import whatever the limit.
``forgetful``: behaves (opts out of an out-of-profile event with code 454, imports 2 kW under a 2.5 kW limit) until
it receives an out-of-profile event; from then on it forgets the last valid limit and imports 4 kW.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta

import aiohttp
from openleadr.messaging import create_message, parse_message

from protocol import INTERVAL, floor_to_interval
from protocol.oadr20b import encode_telemetry_report, hems_report_metadata
from protocol.reports import Telemetry, TelemetryInterval


async def main(mode: str, url: str, ean: str, start: datetime, speed: float) -> None:
    wall0 = asyncio.get_running_loop().time()

    def now() -> datetime:
        return start + timedelta(seconds=(asyncio.get_running_loop().time() - wall0) * speed)

    async with aiohttp.ClientSession() as http:
        async def send(service: str, kind: str, **payload: object) -> tuple[str, dict]:
            async with http.post(f"{url}/{service}", data=create_message(kind, **payload)) as reply:
                return parse_message(await reply.read())

        _, reg = await send("EiRegisterParty", "oadrCreatePartyRegistration", request_id="r1", ven_name=ean,
                            http_pull_model=True, xml_signature=False, report_only=False, profile_name="2.0b",
                            transport_name="simpleHttp")
        ven_id = reg["ven_id"]
        request_id = None
        if mode in ("greedy", "forgetful"):
            await send("EiEvent", "oadrRequestEvent", request_id="r2", ven_id=ven_id)
            _, registered = await send("EiReport", "oadrRegisterReport", request_id="r3", ven_id=ven_id,
                                       report_request_id=0, reports=hems_report_metadata(resource_id=ean,
                                                                                         created_at=now()))
            request_id = next(r["report_request_id"] for r in registered["report_requests"]
                              if r["report_specifier"]["report_specifier_id"] == "HEMS_TELEMETRY")
        reported = floor_to_interval(now())
        bad_seen_at: datetime | None = None
        while True:
            kind, payload = await send("OadrPoll", "oadrPoll", ven_id=ven_id)
            if kind == "oadrDistributeEvent" and mode in ("greedy", "forgetful"):
                responses = []
                for event in payload.get("events", []):
                    bad = mode == "forgetful" and any(float(i["signal_payload"]) < 0 for s in event["event_signals"]
                                                      for i in s["intervals"])
                    if bad and bad_seen_at is None:
                        bad_seen_at = now()
                    responses.append({"response_code": 454 if bad else 200, "response_description": "OK",
                                      "request_id": payload.get("request_id"),
                                      "event_id": event["event_descriptor"]["event_id"],
                                      "modification_number": event["event_descriptor"]["modification_number"],
                                      "opt_type": "optOut" if bad else "optIn"})
                await send("EiEvent", "oadrCreatedEvent", ven_id=ven_id, response={
                    "response_code": 200, "response_description": "OK", "request_id": payload.get("request_id")},
                    event_responses=responses)
            if request_id is not None and floor_to_interval(now()) - INTERVAL >= reported:
                forgot = bad_seen_at is not None and reported >= bad_seen_at
                import_kw = 2.0 if mode == "forgetful" and not forgot else 4.0
                telemetry = Telemetry(intervals=(TelemetryInterval(start=reported, import_kw=import_kw,
                                                                   export_kw=0.0),))
                await send("EiReport", "oadrUpdateReport", request_id="r4", ven_id=ven_id, reports=[
                    encode_telemetry_report(telemetry, report_request_id=request_id, created_at=now())])
                reported += INTERVAL
            await asyncio.sleep(0.2)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], datetime.fromisoformat(sys.argv[4]).astimezone(UTC),
                     float(sys.argv[5])))
