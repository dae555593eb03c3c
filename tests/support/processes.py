"""Run ``dso-server serve`` as a real process for tests: ports picked by the OS (0) and read from its output."""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

_VTN = re.compile(r"dso-server: VTN at (\S+)")
_API = re.compile(r"dso-server: operator API at (\S+?)/api/")


@dataclass
class DsoProcess:
    process: subprocess.Popen[bytes]
    vtn_url: str
    api_url: str
    log_path: Path

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@contextlib.contextmanager
def dso_server_process(args: Sequence[str], *, workdir: Path, start_timeout_s: float = 60) -> Iterator[DsoProcess]:
    """``dso-server serve --vtn-port 0 --api-port 0 *args`` in ``workdir``; stopped with SIGTERM (then killed)."""
    log_path = workdir / "dso-server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "dso_server.cli", "serve", "--vtn-port", "0", "--api-port", "0", *args],
            stdout=subprocess.PIPE, stderr=log, cwd=workdir, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            bufsize=0)  # unbuffered: the selector below must see every line the server prints
    try:
        assert process.stdout is not None
        vtn_url = api_url = None
        deadline = time.monotonic() + start_timeout_s
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while vtn_url is None or api_url is None:
                if not selector.select(timeout=max(deadline - time.monotonic(), 0)):
                    raise RuntimeError(f"dso-server did not start within {start_timeout_s} s:\n"
                                       + log_path.read_text(errors="replace")[-3000:])
                line = process.stdout.readline().decode()
                if not line:
                    raise RuntimeError(f"dso-server exited ({process.wait()}):\n"
                                       + log_path.read_text(errors="replace")[-3000:])
                if match := _VTN.search(line):
                    vtn_url = match[1]
                if match := _API.search(line):
                    api_url = match[1]
        yield DsoProcess(process, vtn_url, api_url, log_path)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()
