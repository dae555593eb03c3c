"""A private, throwaway PostgreSQL server for tests, benchmarks and trying ``--db postgresql://`` out.

It runs Debian's (or any local) PostgreSQL binaries on a fresh cluster in a temporary directory, listening only
on a Unix socket inside that directory (no TCP port, so no port race), trusting local connections, and is
removed again by ``stop()``. PostgreSQL refuses to run as root: when this process is root the server runs as
the ``postgres`` system user (``runuser``), which owns the directory.

Durability settings are relaxed (``fsync=off``): a crash of the *server machine* could lose data, which no test
here causes; a killed client (a VTN worker) loses nothing the server acknowledged, as with any PostgreSQL.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

SUPERUSER = "dso"
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 5
"""Seconds pg_ctl waits for the throwaway server to stop before it is killed."""


class PostgresNotFound(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def find_bindir() -> Path:
    """Where initdb, pg_ctl and postgres are: $DSO_PG_BINDIR, Debian's newest /usr/lib/postgresql/N/bin, or PATH."""
    configured = os.environ.get("DSO_PG_BINDIR")
    if configured:
        return Path(configured)
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if debian:
        return Path(debian[-1]).parent
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise PostgresNotFound("no PostgreSQL server binaries (initdb, pg_ctl) found; install Debian's postgresql "
                           "package (apt-get install -y postgresql) or set DSO_PG_BINDIR")


class TemporaryPostgres:
    """``with TemporaryPostgres() as pg: url = pg.create_database("t1")``."""

    def __init__(self) -> None:
        self.bindir = find_bindir()
        self.directory: Path | None = None
        self._as_postgres = os.geteuid() == 0
        self._databases = 0

    def _run(self, *command: str) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bindir / command[0]), *command[1:]]
        if self._as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        return subprocess.run(argv, capture_output=True, text=True, timeout=START_TIMEOUT_S, check=False,
                              cwd=self.directory)

    def _check(self, result: subprocess.CompletedProcess[str], what: str) -> None:
        if result.returncode != 0:
            log = ""
            if self.directory is not None and (self.directory / "server.log").exists():
                log = (self.directory / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"PostgreSQL {what} failed ({result.returncode}): {result.stderr.strip()} {log}")

    def start(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="dso-pg-"))
        if self._as_postgres:
            shutil.chown(self.directory, user="postgres", group="postgres")
        data = self.directory / "data"
        try:
            self._check(self._run("initdb", "-D", str(data), "-U", SUPERUSER, "--auth=trust", "--no-sync",
                                  "-E", "UTF8", "--no-locale"), "initdb")
            options = (f"-c listen_addresses='' -c unix_socket_directories='{self.directory}' -c fsync=off "
                       "-c full_page_writes=off -c synchronous_commit=off -c max_connections=300 "
                       "-c shared_buffers=128MB")
            self._check(self._run("pg_ctl", "-D", str(data), "-l", str(self.directory / "server.log"), "-o",
                                  options, "-w", "-t", str(START_TIMEOUT_S), "start"), "start")
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int | None:
        """The postmaster's pid (its children are the server's other processes)."""
        if self.directory is None:
            return None
        try:
            return int((self.directory / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def url(self, database: str = "postgres") -> str:
        if self.directory is None:
            raise RuntimeError("the temporary PostgreSQL server is not running")
        return f"postgresql://{SUPERUSER}@/{database}?host={self.directory}"

    def create_database(self, name: str | None = None) -> str:
        """A new, empty database; its URL."""
        import psycopg

        self._databases += 1
        name = name or f"dso_{os.getpid()}_{self._databases}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def stop(self) -> None:
        directory, self.directory = self.directory, None
        if directory is None:
            return
        pid_file = directory / "data" / "postmaster.pid"
        if pid_file.exists():
            result = None
            with contextlib.suppress(subprocess.TimeoutExpired):
                result = self._run("pg_ctl", "-D", str(directory / "data"), "-m", "immediate", "-w", "-t",
                                   str(STOP_TIMEOUT_S), "stop")
            if (result is None or result.returncode != 0) and pid_file.exists():
                # A throwaway server: one that does not stop at once is killed (pg_ctl would wait a minute).
                with contextlib.suppress(OSError, ValueError, IndexError):
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        shutil.rmtree(directory, ignore_errors=True)

    def __enter__(self) -> TemporaryPostgres:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()
