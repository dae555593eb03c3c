"""``dso-server serve`` as a real process for tests: bound to port 0, the URLs read back from what it prints.

    with DsoProcess(tmp_path, "--contracts", str(contracts), "--pki", str(pki)) as dso:   # or "--insecure"
        dso.api_url, dso.vtn_url, dso.token_file     # an operate token made with 'dso-server token create'

The VTN is secure by default: give it ``--pki`` (``support.security.LabPki`` makes one), or say ``--insecure``
where the test is not about the VTN's transport.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

BIN = Path(sys.executable).parent
_URL = re.compile(r"dso-server: (VTN|operator API) at (\S+)")


def contracts_toml(eans: list[str], group: str = "feeder-1") -> str:
    """A contracts file (``dso_server.contracts``) with one ordinary household per EAN."""
    return "".join(f"""
[[household]]
connection_point_id = "{ean}"
group = "{group}"
contracted_max_import_kw = 17.0
contracted_max_export_kw = 10.0
failsafe_import_kw = 4.2
failsafe_export_kw = 4.2
failsafe_duration_s = 7200
""" for ean in eans)


def dso_server(*argv: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "dso-server"), *argv], capture_output=True, text=True, timeout=timeout_s)


class DsoProcess:
    def __init__(self, directory: Path, *serve_args: str, db: Path | None = None, role: str = "operate") -> None:
        self.directory = directory
        self.db = db or directory / "dso.sqlite"
        self.serve_args = serve_args
        self.role = role
        self.token_file = directory / f"{role}.token"
        self.log = directory / "dso-server.log"
        self.process: subprocess.Popen[str] | None = None
        self.vtn_url = self.api_url = ""

    def __enter__(self) -> DsoProcess:
        if not self.token_file.exists():
            made = dso_server("token", "create", "--db", str(self.db), "--name", f"test-{self.role}", "--role",
                              self.role, "--output", str(self.token_file))
            assert made.returncode == 0, made.stderr
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [str(BIN / "dso-server"), "serve", "--db", str(self.db), "--vtn-port", "0", "--api-port", "0",
                 *self.serve_args], stdout=subprocess.PIPE, stderr=log, text=True)
        urls: dict[str, str] = {}
        deadline = time.monotonic() + 60
        assert self.process.stdout is not None
        while len(urls) < 2:
            line = self.process.stdout.readline()
            if not line:
                self.stop()
                raise AssertionError(f"dso-server serve ended before it listened:\n{self.log.read_text()}")
            if match := _URL.search(line):
                urls[match.group(1)] = match.group(2)
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError("dso-server serve did not print its URLs within 60 s")
        self.vtn_url, self.api_url = urls["VTN"], urls["operator API"].removesuffix("/api/")
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        code = self.process.returncode
        if os.environ.get("SHOW_DSO_LOG"):
            print(self.log.read_text())
        return code

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    @property
    def token(self) -> str:
        return self.token_file.read_text().strip()

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}
