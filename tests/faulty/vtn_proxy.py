"""A faulty VTN: our DSO's VTN behind a proxy that rewrites every oadrDistributeEvent with one fault.

The proxy parses the answer with openleadr's messaging, changes the events, and renders it again, so what the
suite receives is well-formed 2.0b with exactly one thing wrong. The VEN's oadrCreatedEvent answers go back with
the modification numbers our VTN sent, so that the faulty VTN stays consistent with itself (a real VTN that
reuses modification numbers also counts the answers to them as answers):

``reuse_modification_numbers``  every event keeps modificationNumber 0 (breaks VTN-EVT-02, VTN-EVT-03)
``interval_gap``                15 minutes between the first and the second interval of every signal, the
                                active period lengthened to match (breaks VTN-SHP-03)
``only_changes``                a distribution carries only events the VEN has not seen in that version
                                (breaks VTN-EVT-06)
``stale_status``                an active event is sent with eventStatus 'far' (breaks VTN-EVT-05)
``requests_comfort``            (an ``answer_fault``) requests the raw comfort readings a household offers, though
                                its contract records no consent (breaks VTN-PRIV-01)

With ``ssl_context`` the proxy terminates TLS itself in front of a plain-HTTP VTN: with a context that requires
client certificates of a CA but nothing more (``accepts_any_certificate``), it is a VTN that serves any certificate
its CA issued, for any household (breaks VTN-SEC-02, VTN-SEC-03).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import aiohttp
from aiohttp import web
from openleadr.messaging import create_message, parse_message

Events = list[dict[str, Any]]


def reuse_modification_numbers(events: Events, seen: set[tuple[str, int]]) -> Events:
    for event in events:
        event["event_descriptor"]["modification_number"] = 0
    return events


def interval_gap(events: Events, seen: set[tuple[str, int]]) -> Events:
    gap = timedelta(minutes=15)
    for event in events:
        event["active_period"]["duration"] += gap
        for signal in event["event_signals"]:
            for interval in signal["intervals"][1:]:
                interval["dtstart"] += gap
    return events


def only_changes(events: Events, seen: set[tuple[str, int]]) -> Events:
    keys = [(str(e["event_descriptor"]["event_id"]), int(e["event_descriptor"]["modification_number"]))
            for e in events]
    kept = [e for e, key in zip(events, keys, strict=True) if key not in seen]
    seen.update(keys)
    return kept


def stale_status(events: Events, seen: set[tuple[str, int]]) -> Events:
    for event in events:
        if event["event_descriptor"]["event_status"] == "active":
            event["event_descriptor"]["event_status"] = "far"
    return events


def accepts_any_certificate(events: Events, seen: set[tuple[str, int]]) -> Events:
    """No change to the events: the fault is the missing certificate-to-household binding (``ssl_context``)."""
    return events


def unchanged(events: Events, seen: set[tuple[str, int]]) -> Events:
    return events


def requests_comfort(kind: str, payload: dict[str, Any]) -> dict[str, Any] | None:
    """Adds a request for x-COMFORT_STATUS (all its rIDs) to every oadrRegisteredReport; None (the answer passes
    unchanged, as the VTN wrote it) for every other answer."""
    if kind != "oadrRegisteredReport":
        return None
    payload["report_requests"] = [*(payload.get("report_requests") or []), {
        "report_request_id": "rr-raw-comfort",
        "report_specifier": {"report_specifier_id": "HEMS_COMFORT", "granularity": timedelta(minutes=15),
                             "report_back_duration": timedelta(minutes=15), "specifier_payloads": [
                                 {"r_id": "indoor_temperature_c", "reading_type": "Direct Read"}]}}]
    return payload


Fault = Callable[[Events, set[tuple[str, int]]], Events]
AnswerFault = Callable[[str, dict[str, Any]], dict[str, Any] | None]
"""(answer type, its payload) -> the payload to send instead, or None to pass the VTN's answer on untouched."""


class FaultyVtnProxy:
    def __init__(self, upstream: str, fault: Fault, *, ssl_context: ssl.SSLContext | None = None,
                 answer_fault: AnswerFault | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.fault = fault
        self.answer_fault = answer_fault
        self.ssl_context = ssl_context
        self.seen: set[tuple[str, int]] = set()
        self.real: dict[str, int] = {}
        """Per event id, the modification number our VTN last sent (before the fault)."""
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def _forward(self, request: web.Request) -> web.Response:
        sent = await request.read()
        try:
            kind, payload = parse_message(sent)
        except Exception:  # the suite's deliberately broken request: pass it on untouched
            kind, payload = "", {}
        if kind == "oadrCreatedEvent":
            for response in payload.get("event_responses") or []:
                response["modification_number"] = self.real.get(str(response.get("event_id")),
                                                                response.get("modification_number"))
            sent = create_message(kind, **payload).encode()
        async with aiohttp.ClientSession() as http, http.post(
                f"{self.upstream}/{request.match_info['service']}", data=sent,
                headers={"Content-Type": "application/xml"}) as reply:
            body = await reply.read()
            status = reply.status
        if status == 200 and body:
            kind, payload = parse_message(body)
            if kind == "oadrDistributeEvent":
                for event in payload.get("events") or []:
                    descriptor = event["event_descriptor"]
                    self.real[str(descriptor["event_id"])] = descriptor["modification_number"]
                payload["events"] = self.fault(payload.get("events") or [], self.seen)
                body = create_message(kind, **payload).encode()
            elif self.answer_fault is not None and (changed := self.answer_fault(kind, payload)) is not None:
                body = create_message(kind, **changed).encode()
        return web.Response(status=status, body=body, content_type="application/xml")

    async def __aenter__(self) -> FaultyVtnProxy:
        app = web.Application()
        app.router.add_post("/OpenADR2/Simple/2.0b/{service}", self._forward)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        scheme = "https" if self.ssl_context is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.runner.addresses[0][1]}/OpenADR2/Simple/2.0b"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
