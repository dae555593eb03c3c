"""VTN load benchmark: N simulated VENs against the project's VTN and, in the same run, a stock openleadr VTN.

Every VEN does what a real one does, over one keep-alive HTTP connection of its own: it registers
(oadrCreatePartyRegistration), answers the oadrDistributeEvent of its first poll with oadrCreatedEvent, and then
sends oadrPoll back to back, closed loop, for the measured window; a share of the VENs (``--telemetry-share``)
also registered its reports and posts an oadrUpdateReport with telemetry every ``--telemetry-every-s`` seconds.
After the window every VEN's event is changed (the project: a modification through the operator API; stock
openleadr, which cannot modify: a second event per VEN through ``add_raw_event``) while the VENs keep polling:
each VEN's first poll sent after the API acknowledged the change must carry it (a poll answered from a stale
cache counts as ``stale``, an error), and the bench reports how long the change took to reach every VEN and
the longest poll meanwhile (every VEN fetching and answering its change at once is a burst of work that
polling every 10 s would spread over 10 s; it is reported apart from the steady window's figures).

Both servers carry the same events: one capacity bandwidth per household, encoded by ``protocol.oadr20b`` for
both (stock openleadr gets it through ``add_raw_event``). Each server runs in processes of its own; the load comes
from ``--generators`` processes of raw asyncio HTTP clients (prepared request bytes, no HTTP library on the
path; TLS through OpenSSL's socket BIO, ``SocketTls``), so their CPU per poll can be printed beside the server's.
Cases:

* ``plain``: HTTP on loopback (the project server with ``--insecure``);
* ``tls``: mutual TLS, every VEN with a client certificate of its own issued by a lab PKI (``dso-server pki``,
  ECDSA P-256) and enrolled for its household;
* ``signed``: mutual TLS and XML signatures both ways (``serve --sign-messages``): every request is signed by its
  VEN afresh (a new ReplayProtect nonce), every answer by the VTN. The generators sign a stock of polls (and
  telemetry reports) per VEN just before the window (each used while under 25 s old, inside the VTN's 30 s
  replay window; more are signed as they are sent), so that their signing does not compete with the server
  during the window; the steady window is then at most 25 s minus the warm-up (``--duration-s 15`` fits).

The stock openleadr baseline runs the plain case: openleadr ties signatures to TLS (it verifies signatures on
every TLS request), so its TLS case would be its signed case, and it re-reads its signing key for every message.

Per case and server: polls/s, p50/p99 latency, errors, stale polls, server and generator CPU (microseconds per
poll) and how busy the machine was with other work. The project server is measured with ``--workers`` 1 and,
on PostgreSQL, with 2 (the row says how many). The last line:

    polls_per_s=<x> tls_polls_per_s=<t> signed_polls_per_s=<s> baseline_ratio=<x/stock> errors=<n>

with x the project's best plain figure (its worker count is printed in the table), stock the stock openleadr
plain figure of the same run, and n the project server's errors and stale polls in all cases together (the
stock server's are in the table).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing as mp
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from protocol import BandwidthInterval, CapacityBandwidth, Firmness
from protocol.contract import make_ean18

HERE = Path(__file__).resolve()
PREFIX = "/OpenADR2/Simple/2.0b"
Q = timedelta(minutes=15)
CLK_TCK = os.sysconf("SC_CLK_TCK")
SIGNED_POLLS_PER_S_EXPECTED = 4000
"""How many signed polls per second the pre-signed stock is sized for (more are signed as they are sent)."""
PRESIGNED_MAX_AGE_S = 25.0
"""A pre-signed poll older than this is not sent: the VTN refuses signatures older than 30 s (ReplayGuard)."""


# ------------------------------------------------------------------------------------------- the events


def bandwidth(start: datetime, import_kw: float) -> CapacityBandwidth:
    return CapacityBandwidth(firmness=Firmness.FIRM, intervals=tuple(
        BandwidthInterval(start=start + i * Q, import_limit_kw=import_kw, export_limit_kw=5.0) for i in range(8)))


def event_start(now: datetime) -> datetime:
    """The first quarter hour at least an hour ahead: the events stay 'far' during the whole run."""
    later = now + timedelta(hours=1)
    return later.replace(minute=later.minute - later.minute % 15, second=0, microsecond=0) + Q


def eans(n: int) -> list[str]:
    return [make_ean18(f"87169{i:012d}") for i in range(n)]


# --------------------------------------------------------------------------------------- CPU accounting


def _proc_cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, []))
    return out


def tree_cpu_s(pid: int) -> float:
    """CPU seconds used so far by ``pid`` and all its descendants."""
    return sum(_proc_cpu_s(p) for p in _descendants(pid))


def machine_cpu_s() -> float:
    """Busy CPU seconds of the whole machine so far (all cores, /proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / CLK_TCK


# ---------------------------------------------------------------------------------------------- servers


@dataclass
class Server:
    name: str
    host: str
    port: int
    process: subprocess.Popen[str]
    api_url: str | None = None
    publication_id: str | None = None
    workers: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    database_pid: int | None = None

    def cpu_s(self) -> float:
        return tree_cpu_s(self.process.pid) + (tree_cpu_s(self.database_pid) if self.database_pid else 0.0)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _read_line(process: subprocess.Popen[str], pattern: str, timeout_s: float = 120) -> re.Match[str]:
    deadline = time.monotonic() + timeout_s
    seen = []
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            if process.poll() is not None:
                break
            continue
        seen.append(line)
        match = re.search(pattern, line)
        if match:
            return match
    raise RuntimeError(f"server did not print {pattern!r}; it said:\n{''.join(seen)[-3000:]}")


def _api(server: Server, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{server.api_url}{path}", method=method, data=data, headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {server.extra['token']}"})
    with urllib.request.urlopen(request, timeout=120) as answer:
        return json.loads(answer.read())


def _bandwidth_body(payload: CapacityBandwidth) -> dict[str, Any]:
    return json.loads(payload.model_dump_json())


def enrol_all(db: str, pki_dir: Path, names: Sequence[str]) -> None:
    """Enrol every VEN certificate of the lab PKI in the store, in one transaction."""
    from cryptography import x509

    from dso_server.security.pki import fingerprint_sha256
    from dso_server.store.certificates import CertificateStore, Enrolment
    from dso_server.store.sqlite import DsoStore

    with DsoStore(db) as store, store.transaction():
        certificates = CertificateStore(store)
        for name in names:
            certificate = x509.load_pem_x509_certificate((pki_dir / "vens" / f"{name}.crt").read_bytes())
            certificates.enrol(Enrolment(fingerprint_sha256=fingerprint_sha256(certificate), connection_point_id=name,
                                         subject=certificate.subject.rfc4514_string(),
                                         serial=f"{certificate.serial_number:x}",
                                         not_after=certificate.not_valid_after_utc, enrolled_at=datetime.now(UTC)))


def make_pki(directory: Path, names: Sequence[str]) -> Path:
    """A lab CA, the VTN's certificate and one client certificate per VEN (not enrolled yet)."""
    from dso_server.security.pki import Pki

    pki = Pki(directory)
    pki.init(name="vtn_load CA")
    pki.issue_vtn()
    for name in names:
        pki.issue_ven(ean=name)
    return directory


def start_project(*, n: int, db: str, workers: int, workdir: Path, start: datetime, case: str = "plain",
                  pki_dir: Path | None = None) -> Server:
    contracts = workdir / "contracts.toml"
    contracts.write_text("".join(
        f'[[household]]\nconnection_point_id = "{ean}"\ngroup = "bench"\ncontracted_max_import_kw = 17.0\n'
        'contracted_max_export_kw = 10.0\nfailsafe_import_kw = 4.2\nfailsafe_export_kw = 4.2\n'
        'failsafe_duration_s = 7200\n\n' for ean in eans(n)))
    token = workdir / f"token-{time.monotonic_ns()}"
    subprocess.run([sys.executable, "-m", "dso_server.cli", "token", "create", "--db", db, "--name",
                    token.name, "--role", "operate", "--output", str(token)], check=True, capture_output=True)
    argv = [sys.executable, "-m", "dso_server.cli", "serve", "--db", db, "--contracts", str(contracts),
            "--vtn-port", "0", "--api-port", "0", "--log-level", "WARNING"]
    if case == "plain":
        argv += ["--insecure"]
    else:
        assert pki_dir is not None
        enrol_all(db, pki_dir, eans(n))
        argv += ["--pki", str(pki_dir)] + (["--sign-messages"] if case == "signed" else [])
    if workers != 1:
        argv += ["--workers", str(workers)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=workdir)
    try:
        vtn = _read_line(process, r"VTN at https?://([\d.]+):(\d+)")
        api = _read_line(process, r"operator API at (http://\S+?)/api/")
    except BaseException:
        process.kill()
        raise
    server = Server(f"project ({workers} worker{'s' if workers > 1 else ''})", vtn.group(1), int(vtn.group(2)),
                    process, api_url=api.group(1), workers=workers, extra={"token": token.read_text().strip()})
    body = {"group": "bench", **_bandwidth_body(bandwidth(start, 5.0))}
    server.publication_id = _api(server, "POST", "/api/bandwidths", body)["publication_id"]
    return server


def start_stock(*, n: int, start: datetime) -> Server:
    argv = [sys.executable, str(HERE), "stock-server", "--vens", str(n), "--start", start.isoformat()]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        match = _read_line(process, r"stock VTN at ([\d.]+):(\d+)")
    except BaseException:
        process.kill()
        raise
    return Server("stock openleadr", match.group(1), int(match.group(2)), process)


def change_events(server: Server, start: datetime) -> None:
    """Change every VEN's events, through the operator API (project) or the stock server's bench route."""
    if server.api_url is not None:
        _api(server, "PUT", f"/api/publications/{server.publication_id}", _bandwidth_body(bandwidth(start, 3.0)))
    else:
        urllib.request.urlopen(urllib.request.Request(f"http://{server.host}:{server.port}/bench/change",
                                                      method="POST", data=b""), timeout=120).read()


def stock_server_main(args: argparse.Namespace) -> None:
    """A stock openleadr 0.5.36 OpenADRServer as its documentation sets one up: a registration handler, a
    ven_lookup, events queued with add_raw_event; one route of ours to queue the mid-run change."""
    import logging

    from aiohttp import web
    from openleadr import OpenADRServer

    from protocol.oadr20b import encode_event

    logging.getLogger("openleadr").setLevel(logging.ERROR)
    start = datetime.fromisoformat(args.start)
    known = set(eans(args.vens))
    vens: dict[str, dict[str, Any]] = {}
    server = OpenADRServer(vtn_id="STOCK-VTN", http_host="127.0.0.1", http_port=0, show_fingerprint=False,
                           ven_lookup=lambda ven_id: vens.get(ven_id))

    def event_for(ven_id: str, number: int, import_kw: float) -> dict[str, Any]:
        now = datetime.now(UTC)
        return encode_event(bandwidth(start, import_kw), event_id=f"ev-{number}-{ven_id}", modification_number=0,
                            ven_id=ven_id, created_at=now, modified_at=now, now=now)

    async def on_create_party_registration(info: dict[str, Any]) -> tuple[str, str] | bool:
        name = str(info.get("ven_name"))  # openleadr turns an all-digit venName into an int
        if name not in known:
            return False
        ven_id = f"ven-{name}"
        if ven_id not in vens:
            vens[ven_id] = {"ven_id": ven_id, "ven_name": name, "registration_id": f"reg-{name}", "fingerprint": None}
            server.add_raw_event(ven_id, event_for(ven_id, 1, 5.0), callback=None)
        return ven_id, vens[ven_id]["registration_id"]

    async def change(request: web.Request) -> web.Response:
        for ven_id in list(vens):
            server.add_raw_event(ven_id, event_for(ven_id, 2, 3.0), callback=None)
        return web.Response(text="ok")

    server.add_handler("on_create_party_registration", on_create_party_registration)
    server.app.router.add_post("/bench/change", change)

    async def run() -> None:
        runner = web.AppRunner(server.app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(f"stock VTN at 127.0.0.1:{runner.addresses[0][1]}", flush=True)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


# -------------------------------------------------------------------------------------------- generator


def _message(message_type: str, **payload: Any) -> bytes:
    from openleadr.messaging import create_message

    return create_message(message_type, **payload).encode()


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: one request at a time, the answer's status and body."""

    def __init__(self) -> None:
        self.transport: Any = None
        """uvloop's TCP transport, or a SocketTls."""
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.sent_at = 0.0
        """When the outstanding request was sent (monotonic); the watchdog fails requests older than 30 s."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        found = re.search(rb"\r\ncontent-length: *(\d+)", head)
        length = int(found.group(1)) if found else 0
        if len(self.buffer) < end + 4 + length:
            return
        status = int(head[9:12])
        body = bytes(self.buffer[end + 4:end + 4 + length])
        del self.buffer[:end + 4 + length]
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionError(f"connection closed: {exc}"))

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.sent_at = time.monotonic()
        self.transport.write(raw)
        return await self.waiter

    def expire(self, now: float, timeout_s: float) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done() and now - self.sent_at > timeout_s:
            self.waiter = None
            waiter.set_exception(TimeoutError(f"no answer within {timeout_s:g} s"))


class SocketTls:
    """A VEN's mutual-TLS connection through OpenSSL's socket BIO, driven by the event loop's reader callback:
    ``recv`` reads and decrypts, ``send`` encrypts and writes, each in one call into C. asyncio's own TLS (a memory
    BIO worked from Python: uvloop's SSLProtocol) cost the generators about 15 us per poll more than plain TCP,
    on the two cores they share with the server; a real VEN runs on a machine of its own, so the generators
    should cost as little as they can. The server keeps asyncio's TLS: that is what is measured."""

    def __init__(self, sock: Any, protocol: asyncio.Protocol, loop: asyncio.AbstractEventLoop) -> None:
        self.sock = sock
        self.protocol = protocol
        self.loop = loop
        self.unsent = b""
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._readable)
        protocol.connection_made(self)  # type: ignore[arg-type]

    @staticmethod
    def connect(context: Any, host: str, port: int) -> Any:
        """Connect and shake hands, blocking (run in a thread while setting up)."""
        import socket

        raw = socket.create_connection((host, port))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return context.wrap_socket(raw, server_hostname="localhost")

    def _readable(self) -> None:
        import ssl

        try:
            data = self.sock.recv(65536)
            while self.sock.pending():  # decrypted bytes OpenSSL holds; further records wake the reader again
                data += self.sock.recv(65536)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return  # a record without application data (a TLS 1.3 session ticket)
        except OSError as error:
            self._lost(error)
            return
        if not data:
            self._lost(None)
            return
        self.protocol.data_received(data)

    def write(self, data: bytes) -> None:
        import ssl

        try:
            sent = self.sock.send(data)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
            sent = 0
        except OSError as error:
            self._lost(error)
            return
        if sent < len(data):
            self.unsent = data[sent:]
            self.loop.add_writer(self.sock.fileno(), self._writable)

    def _writable(self) -> None:
        self.loop.remove_writer(self.sock.fileno())
        unsent, self.unsent = self.unsent, b""
        self.write(unsent)

    def _lost(self, error: Exception | None) -> None:
        self.close()
        self.protocol.connection_lost(error)

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
            self.loop.remove_writer(self.sock.fileno())
            self.sock.close()


def http_post(path: str, body: bytes) -> bytes:
    return (f"POST {PREFIX}/{path} HTTP/1.1\r\nHost: vtn\r\nContent-Type: application/xml\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


@dataclass
class GeneratorSpec:
    index: int
    host: str
    port: int
    names: list[str]
    telemetry: set[str]
    warmup_s: float
    duration_s: float
    telemetry_every_s: float
    change_s: float
    pki_dir: Path | None = None
    """With a PKI: mutual TLS, each VEN with its own client certificate."""
    sign: bool = False
    presign: int = 0
    """Signed polls each VEN signs before the window (``Ven.presign``)."""


@dataclass
class GeneratorResult:
    polls: int = 0
    latencies_s: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    stale: int = 0
    missed_change: int = 0
    change_delays_s: list[float] = field(default_factory=list)
    """Per VEN that got the change: from the API's acknowledgement to the answer that carried it."""
    burst_max_s: float = 0.0
    """The longest poll while the change was being fetched."""
    distributions: int = 0
    reports: int = 0
    cpu_s: float = 0.0
    window_s: float = 0.0


class Ven:
    def __init__(self, name: str, telemetry: bool, spec: GeneratorSpec) -> None:
        self.name = name
        self.telemetry = telemetry
        self.ven_id = ""
        self.connection = Connection()
        self.poll = b""
        self.report = b""
        self.got_change = False
        self.ssl: Any = None
        self.signer: Any = None
        self.report_payload: dict[str, Any] = {}
        self.presigned: deque[tuple[float, bytes]] = deque()
        self.presigned_reports: deque[tuple[float, bytes]] = deque()
        if spec.pki_dir is not None:
            import ssl

            cert, key = spec.pki_dir / "vens" / f"{name}.crt", spec.pki_dir / "vens" / f"{name}.key"
            self.ssl = ssl.create_default_context(cafile=str(spec.pki_dir / "ca.crt"))
            self.ssl.load_cert_chain(str(cert), str(key))
            if spec.sign:
                from cryptography.hazmat.primitives.serialization import load_pem_private_key

                from hems_client.transport.oadr20b.openleadr_adapter import MessageSigner

                self.signer = MessageSigner(cert.read_bytes(), load_pem_private_key(key.read_bytes(), None))

    def message(self, message_type: str, **payload: Any) -> bytes:
        """A message of this VEN, signed afresh when it signs."""
        if self.signer is None:
            return _message(message_type, **payload)
        from hems_client.transport.oadr20b.openleadr_adapter import render

        return render(message_type, payload, self.signer).encode()

    def poll_request(self) -> bytes:
        if self.signer is None:
            return self.poll
        return _take_fresh(self.presigned) or http_post("OadrPoll", self.message("oadrPoll", ven_id=self.ven_id))

    def presign(self, polls: int, reports: int) -> None:
        """Sign ``polls`` polls (and ``reports`` telemetry reports, for a VEN that posts them) ahead, each with its
        own nonce, used while younger than the VTN's replay window allows: signing is the generator's heaviest
        work, done before the measured window instead of in it. Each message is rendered once and signed
        ``count`` times (``prepare_signed_object``)."""
        for path, kind, payload, count, stock in (
                ("OadrPoll", "oadrPoll", {"ven_id": self.ven_id}, polls, self.presigned),
                ("EiReport", "oadrUpdateReport", self.report_payload, reports if self.telemetry else 0,
                 self.presigned_reports)):
            if count:
                prepared = _prepared(kind, payload)
                for _ in range(count):
                    stock.append((time.monotonic(), http_post(path, self.signer.message(prepared).encode())))

    def report_request(self) -> bytes:
        if self.signer is None:
            return self.report
        return _take_fresh(self.presigned_reports) or http_post(
            "EiReport", self.message("oadrUpdateReport", **self.report_payload))


def _take_fresh(stock: deque[tuple[float, bytes]]) -> bytes | None:
    """The oldest pre-signed request still young enough for the VTN's replay window; None when none is left."""
    while stock:
        signed_at, request = stock.popleft()
        if time.monotonic() - signed_at < PRESIGNED_MAX_AGE_S:
            return request
    return None


def _prepared(message_type: str, payload: dict[str, Any]) -> Any:
    """The message's oadrSignedObject rendered and digested once, for signing many times."""
    from hems_client.transport.oadr20b.openleadr_adapter import signed_object
    from protocol.oadr20b.xmldsig import prepare_signed_object

    return prepare_signed_object(signed_object(message_type, payload))


def _error(result: GeneratorResult, kind: str) -> None:
    result.errors[kind] = result.errors.get(kind, 0) + 1


_EVENT = re.compile(rb"<ei:eventID>([^<]+)</ei:eventID><ei:modificationNumber>(\d+)<")
_REQUEST = re.compile(rb"<pyld:requestID>([^<]*)</pyld:requestID>|<requestID[^>]*>([^<]*)</requestID>")


async def _answer_events(ven: Ven, body: bytes) -> None:
    """oadrCreatedEvent (optIn) for every event of an oadrDistributeEvent; read with regular expressions, since
    openleadr's parser costs the generator milliseconds per distribution."""
    events = _EVENT.findall(body)
    found = _REQUEST.search(body)
    request_id = (found.group(1) or found.group(2)).decode() if found else None
    responses = [{"event_id": event_id.decode(), "modification_number": int(number), "response_code": 200,
                  "response_description": "OK", "opt_type": "optIn", "request_id": request_id}
                 for event_id, number in events]
    created = ven.message("oadrCreatedEvent", ven_id=ven.ven_id, event_responses=responses,
                       response={"response_code": 200, "response_description": "OK", "request_id": request_id})
    status, answer = await ven.connection.request(http_post("EiEvent", created))
    if status != 200 or b"oadrResponse" not in answer:
        raise RuntimeError(f"oadrCreatedEvent answered {status}: {answer[:200]!r}")


async def _setup(ven: Ven, spec: GeneratorSpec) -> None:
    from protocol.oadr20b import encode_telemetry_report, hems_report_metadata
    from protocol.reports import Telemetry, TelemetryInterval

    loop = asyncio.get_running_loop()
    if ven.ssl is None:
        await loop.create_connection(lambda: ven.connection, spec.host, spec.port)
    else:
        SocketTls(await loop.run_in_executor(None, SocketTls.connect, ven.ssl, spec.host, spec.port), ven.connection,
                  loop)
    registration = ven.message("oadrCreatePartyRegistration", request_id=f"req-{ven.name}", ven_name=ven.name,
                            http_pull_model=True, xml_signature=False, report_only=False, profile_name="2.0b",
                            transport_name="simpleHttp", transport_address=None)
    status, body = await ven.connection.request(http_post("EiRegisterParty", registration))
    found = re.search(rb"<ei:venID>([^<]+)</ei:venID>", body)
    if status != 200 or b"oadrCreatedPartyRegistration" not in body or found is None or b">200<" not in body:
        raise RuntimeError(f"registration of {ven.name} answered {status}: {body[:300]!r}")
    ven.ven_id = found.group(1).decode()
    ven.poll = http_post("OadrPoll", _message("oadrPoll", ven_id=ven.ven_id))
    if ven.telemetry:
        now = datetime.now(UTC)
        offer = ven.message("oadrRegisterReport", ven_id=ven.ven_id, request_id=f"rr-{ven.name}", report_request_id=0,
                         reports=hems_report_metadata(resource_id=ven.name, created_at=now))
        status, body = await ven.connection.request(http_post("EiReport", offer))
        request_id = re.search(rb"reportRequestID>([^<]+)<", body)
        report_request_id = request_id.group(1).decode() if request_id else "rr-unknown"
        start = now.replace(second=0, microsecond=0) - Q
        telemetry = Telemetry(intervals=(TelemetryInterval(start=start - timedelta(minutes=start.minute % 15),
                                                           import_kw=1.5, export_kw=0.0),))
        report = encode_telemetry_report(telemetry, report_request_id=report_request_id, created_at=now)
        ven.report_payload = {"ven_id": ven.ven_id, "request_id": f"ur-{ven.name}", "reports": [report]}
        ven.report = http_post("EiReport", ven.message("oadrUpdateReport", **ven.report_payload))
    # The first poll brings the event; answer it like a VEN, then poll until nothing is new.
    for _ in range(5):
        status, body = await ven.connection.request(ven.poll_request())
        if b"oadrDistributeEvent" in body:
            await _answer_events(ven, body)
        elif status == 200 and b"oadrResponse" in body:
            return
        else:
            raise RuntimeError(f"poll of {ven.name} answered {status}: {body[:300]!r}")
    raise RuntimeError(f"VEN {ven.name} never saw a quiet poll")


async def _run_ven(ven: Ven, spec: GeneratorSpec, result: GeneratorResult, t0: float, t_end: float,
                   change: tuple[Any, Any], stop_at: float, progress: dict[str, int]) -> None:
    """Poll back to back until ``stop_at``, or until every VEN of this generator had the change; polls in
    [t0, t_end] are the steady window's. ``change``: when the change was started and when the API acknowledged
    it (0 before): a distribution after the start carries it; a quiet answer to a poll sent after the
    acknowledgement, to a VEN that has not had it yet, is stale."""
    change_started, change_at = change
    clock = time.monotonic
    t_end_window = t_end
    t_end = stop_at
    next_report = t0 + (hash(ven.name) % 1000) / 1000 * spec.telemetry_every_s
    while True:
        now = clock()
        if now >= t_end or progress["changed"] >= progress["vens"]:
            return
        try:
            if ven.telemetry and now >= next_report:
                next_report += spec.telemetry_every_s
                status, body = await ven.connection.request(ven.report_request())
                if status != 200 or b"oadrUpdatedReport" not in body:
                    _error(result, f"report {status}")
                elif t0 <= now <= t_end_window:
                    result.reports += 1
                continue
            changed = change_at.value
            sent = clock()
            status, body = await ven.connection.request(ven.poll_request())
            done = clock()
        except (TimeoutError, ConnectionError, OSError) as error:
            _error(result, type(error).__name__)
            return
        counted = sent >= t0 and done <= t_end_window
        if change_started.value > 0:
            result.burst_max_s = max(result.burst_max_s, done - sent)
        if status != 200:
            _error(result, f"http {status}")
            continue
        if b"oadrDistributeEvent" in body:
            result.distributions += 1
            if change_started.value > 0 and not ven.got_change:
                ven.got_change = True
                progress["changed"] += 1
                result.change_delays_s.append(max(0.0, done - (change_at.value or done)))
            try:
                await _answer_events(ven, body)
            except (RuntimeError, ConnectionError, OSError):
                _error(result, "oadrCreatedEvent")
        elif b"oadrResponse" in body and b">200<" in body:
            if changed > 0 and not ven.got_change:
                result.stale += 1  # sent after the change was acknowledged by the API, answered without it
        else:
            _error(result, "unexpected answer")
            continue
        if counted:
            result.polls += 1
            result.latencies_s.append(done - sent)


def generator_main(spec: GeneratorSpec, ready: Any, go: Any, change: tuple[Any, Any], out: Any) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = GeneratorResult()

    async def run() -> None:
        vens = [Ven(name, name in spec.telemetry, spec) for name in spec.names]
        limit = asyncio.Semaphore(64)

        async def setup(ven: Ven) -> None:
            async with limit:
                await _setup(ven, spec)

        await asyncio.gather(*(setup(ven) for ven in vens))
        if spec.sign:
            reports = math.ceil((spec.warmup_s + spec.duration_s) / spec.telemetry_every_s) + 1
            for ven in vens:
                ven.presign(spec.presign, reports)
        ready.release()
        while go.value == 0:  # the orchestrator sets the window start once every generator is ready
            await asyncio.sleep(0.01)
        t0 = go.value
        t_end = t0 + spec.duration_s
        await asyncio.sleep(max(0.0, t0 - spec.warmup_s - time.monotonic()))
        progress = {"vens": len(vens), "changed": 0}
        tasks = [asyncio.create_task(_run_ven(ven, spec, result, t0, t_end, change, t_end + spec.change_s, progress))
                 for ven in vens]

        async def watchdog() -> None:  # one timer for all connections instead of a timeout per request
            while True:
                await asyncio.sleep(1.0)
                now = time.monotonic()
                for ven in vens:
                    ven.connection.expire(now, 30.0)

        guard = asyncio.create_task(watchdog())
        await asyncio.sleep(max(0.0, t0 - time.monotonic()))
        await asyncio.gather(*tasks)
        guard.cancel()
        result.window_s = spec.duration_s
        result.missed_change = sum(not ven.got_change for ven in vens)
        for ven in vens:
            if ven.connection.transport is not None:
                ven.connection.transport.close()

    try:
        asyncio.run(run())
    except Exception as error:  # reported to the orchestrator, which prints it
        out.put(("error", spec.index, f"{type(error).__name__}: {error}"))
        ready.release()
        return
    out.put(("ok", spec.index, result))


# ------------------------------------------------------------------------------------------- one measure


@dataclass
class Measure:
    case: str
    server: str
    vens: int
    polls_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    stale: int
    reports_per_s: float
    change_all_s: float
    """From the API's acknowledgement of the change until the last VEN had it."""
    burst_max_ms: float
    server_cpu_us: float
    generator_cpu_us: float
    others_cores: float
    error_kinds: dict[str, int]


def measure(server: Server, *, case: str, n: int, generators: int, warmup_s: float, duration_s: float,
            telemetry_share: float, telemetry_every_s: float, start: datetime, change_s: float,
            pki_dir: Path | None = None) -> Measure:
    names = eans(n)
    telemetry = set(names[: round(n * telemetry_share)])
    ctx = mp.get_context("fork")
    ready = ctx.Semaphore(0)
    go = ctx.Value("d", 0.0, lock=False)
    change_started = ctx.Value("d", 0.0, lock=False)
    change_at = ctx.Value("d", 0.0, lock=False)
    out = ctx.Queue()
    specs = [GeneratorSpec(i, server.host, server.port, names[i::generators], telemetry & set(names[i::generators]),
                           warmup_s, duration_s, telemetry_every_s, change_s,
                           pki_dir if case != "plain" else None, case == "signed",
                           presign=math.ceil(SIGNED_POLLS_PER_S_EXPECTED * (warmup_s + duration_s) / n) + 1)
             for i in range(generators)]
    processes = [ctx.Process(target=generator_main, args=(spec, ready, go, (change_started, change_at), out),
                             daemon=True)
                 for spec in specs]
    for process in processes:
        process.start()
    try:
        for _ in processes:
            if not ready.acquire(timeout=600):
                raise RuntimeError("the generators did not finish registering within 10 minutes")
        t0 = time.monotonic() + warmup_s + 0.2
        go.value = t0
        time.sleep(max(0.0, t0 - time.monotonic()))
        server_cpu0, machine0, gen_cpu0 = server.cpu_s(), machine_cpu_s(), sum(_proc_cpu_s(p.pid or 0)
                                                                                for p in processes)
        time.sleep(max(0.0, t0 + duration_s - time.monotonic()))
        server_cpu = server.cpu_s() - server_cpu0
        machine = machine_cpu_s() - machine0
        generators_cpu = sum(_proc_cpu_s(p.pid or 0) for p in processes) - gen_cpu0
        change_started.value = time.monotonic()
        change_events(server, start)
        change_at.value = time.monotonic()
        results: list[GeneratorResult] = []
        for _ in processes:
            status, index, payload = out.get(timeout=120)
            if status != "ok":
                raise RuntimeError(f"generator {index} failed: {payload}")
            results.append(payload)
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    polls = sum(r.polls for r in results)
    latencies = sorted(x for r in results for x in r.latencies_s)
    kinds: dict[str, int] = {}
    for r in results:
        for kind, count in r.errors.items():
            kinds[kind] = kinds.get(kind, 0) + count
    missed = sum(r.missed_change for r in results)
    if missed:
        kinds["VEN never got the change"] = missed
    quantile = (lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000) if latencies else (
        lambda q: float("nan"))
    ours = server_cpu + generators_cpu
    delays = [d for r in results for d in r.change_delays_s]
    return Measure(case=case, server=server.name, vens=n, polls_per_s=polls / duration_s, p50_ms=quantile(0.5),
                   p99_ms=quantile(0.99), errors=sum(kinds.values()), stale=sum(r.stale for r in results),
                   reports_per_s=sum(r.reports for r in results) / duration_s,
                   change_all_s=max(delays) if len(delays) == n else float("nan"),
                   burst_max_ms=max(r.burst_max_s for r in results) * 1000,
                   server_cpu_us=server_cpu / max(polls, 1) * 1e6,
                   generator_cpu_us=generators_cpu / max(polls, 1) * 1e6,
                   others_cores=max(0.0, machine - ours) / duration_s, error_kinds=kinds)


# ------------------------------------------------------------------------------------------------- main


@contextlib.contextmanager
def project_store(kind: str, workdir: Path) -> Iterator[tuple[str, int | None]]:
    """Where the project server keeps its store: a fresh SQLite file or a fresh database on a private
    PostgreSQL server started for the run (and that server's pid, whose CPU counts as the VTN's)."""
    if kind == "sqlite":
        yield str(workdir / f"dso-{time.monotonic_ns()}.sqlite"), None
        return
    from dso_server.store.pgtemp import TemporaryPostgres

    with TemporaryPostgres() as postgres:
        yield postgres.create_database(), postgres.pid


COLUMNS = (("case", 7, "{m.case}"), ("server", 32, "{m.server}"), ("vens", 6, "{m.vens}"),
           ("polls/s", 9, "{m.polls_per_s:.0f}"), ("p50 ms", 8, "{m.p50_ms:.1f}"), ("p99 ms", 8, "{m.p99_ms:.1f}"),
           ("errors", 7, "{m.errors}"), ("stale", 6, "{m.stale}"), ("reports/s", 10, "{m.reports_per_s:.1f}"),
           ("srv us/poll", 12, "{m.server_cpu_us:.0f}"), ("gen us/poll", 12, "{m.generator_cpu_us:.0f}"),
           ("others", 7, "{m.others_cores:.2f}"), ("change s", 9, "{m.change_all_s:.2f}"),
           ("burst ms", 9, "{m.burst_max_ms:.0f}"))


def _header() -> str:
    return "".join(name.ljust(width) if i < 2 else name.rjust(width) for i, (name, width, _) in enumerate(COLUMNS))


def _row(m: Measure) -> str:
    return "".join(fmt.format(m=m).ljust(width) if i < 2 else fmt.format(m=m).rjust(width)
                   for i, (_, width, fmt) in enumerate(COLUMNS))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    stock = sub.add_parser("stock-server", help="(internal) run the stock openleadr VTN")
    stock.add_argument("--vens", type=int, required=True)
    stock.add_argument("--start", required=True)
    parser.add_argument("--vens", type=int, default=2000, help="simulated VENs (%(default)s)")
    parser.add_argument("--duration-s", type=float, default=15.0, help="measured window per run (%(default)s)")
    parser.add_argument("--warmup-s", type=float, default=3.0, help="polling before the window (%(default)s)")
    parser.add_argument("--change-s", type=float, default=60.0,
                        help="at most this long after the change, for every VEN to fetch it (%(default)s)")
    parser.add_argument("--generators", type=int, default=2, help="load generator processes (%(default)s)")
    parser.add_argument("--telemetry-share", type=float, default=0.25,
                        help="share of the VENs that post telemetry (%(default)s)")
    parser.add_argument("--telemetry-every-s", type=float, default=5.0,
                        help="how often each of them posts, wall seconds (%(default)s)")
    parser.add_argument("--cases", default="plain", help="comma-separated: plain, tls, signed (%(default)s)")
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite",
                        help="the project server's store for the 1-worker run (%(default)s)")
    parser.add_argument("--workers", default="1",
                        help="comma-separated worker counts of the project server; more than 1 runs on PostgreSQL "
                             "(%(default)s)")
    parser.add_argument("--no-stock", action="store_true", help="skip the stock openleadr baseline")
    args = parser.parse_args(argv)
    if args.command == "stock-server":
        stock_server_main(args)
        return 0

    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    workers = [int(w) for w in args.workers.split(",")]
    start = event_start(datetime.now(UTC))
    measures: list[Measure] = []
    not_run: list[str] = []
    print(f"{args.vens} VENs, {args.generators} generator processes, {args.duration_s:g} s window, "
          f"{args.telemetry_share:.0%} posting telemetry every {args.telemetry_every_s:g} s; "
          f"load average before: {Path('/proc/loadavg').read_text().split()[0]}", flush=True)
    common = dict(n=args.vens, generators=args.generators, warmup_s=args.warmup_s, duration_s=args.duration_s,
                  telemetry_share=args.telemetry_share, telemetry_every_s=args.telemetry_every_s, start=start,
                  change_s=args.change_s)
    with tempfile.TemporaryDirectory(prefix="vtn-load-") as tmp:
        workdir = Path(tmp)
        pki_dir = None
        if set(cases) - {"plain"}:
            began = time.monotonic()
            pki_dir = make_pki(workdir / "pki", eans(args.vens))
            print(f"lab PKI: a CA and {args.vens} VEN certificates (ECDSA P-256) in {time.monotonic() - began:.0f} s",
                  flush=True)
        for case in cases:
            if case not in ("plain", "tls", "signed"):
                not_run.append(case)
                continue
            for count in workers:
                kind = args.db if count == 1 else "postgresql"
                with project_store(kind, workdir) as (db, database_pid):
                    server = start_project(n=args.vens, db=db, workers=count, workdir=workdir, start=start,
                                           case=case, pki_dir=pki_dir)
                    server.name += f" {kind}"
                    server.database_pid = database_pid
                    try:
                        measures.append(measure(server, case=case, pki_dir=pki_dir, **common))
                    finally:
                        server.stop()
                print(_row(measures[-1]), flush=True)
            if not args.no_stock and case == "plain":
                server = start_stock(n=args.vens, start=start)
                try:
                    measures.append(measure(server, case=case, **common))
                finally:
                    server.stop()
                print(_row(measures[-1]), flush=True)

    print()
    print(_header())
    for m in measures:
        print(_row(m))
        if m.error_kinds:
            print(f"       errors: {m.error_kinds}")
    for case in not_run:
        print(f"{case:<7}not run: unknown case (plain, tls, signed)")
    print("srv/gen us/poll: CPU microseconds per poll of the server's processes (with its PostgreSQL) / of the load "
          "generators;\nothers: cores busy with other work on the machine during the window; change s: from the API's "
          "acknowledgement of\nthe change until every VEN had it; burst ms: the longest poll meanwhile (figures of the "
          "steady window exclude the change)")

    def best(case: str, project: bool) -> float:
        figures = [m.polls_per_s for m in measures if m.case == case and m.server.startswith("project") == project]
        return max(figures) if figures else 0.0

    x, stock_x = best("plain", True), best("plain", False)
    errors = sum(m.errors + m.stale for m in measures if m.server.startswith("project"))
    print(f"polls_per_s={x:.0f} tls_polls_per_s={best('tls', True):.0f} signed_polls_per_s={best('signed', True):.0f} "
          f"baseline_ratio={x / stock_x if stock_x else float('nan'):.2f} errors={errors}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
