"""A throwaway PostgreSQL server for the tests (a pytest plugin, loaded by conftest.py).

Debian's PostgreSQL binaries (``/usr/lib/postgresql/<version>/bin``, or ``pg_ctl`` on the
PATH) make a cluster in a temporary folder that listens on a free loopback port, for the
whole session; :func:`postgres_url` gives each test an empty database of its own. The
server refuses to run as root, so as root the cluster belongs to the ``postgres`` user
(created by Debian's package) and its commands run under ``runuser``.

Without the binaries the tests that need the server skip with the reason; with ``CI=true``
they fail instead (``.ci/run`` installs Debian's ``postgresql`` when it is missing), so a
CI job cannot pass on skipped database tests.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cxr.serve.server_process import free_port

IN_CI = os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}
SUPERUSER = "cxr"
# not UTC, so that a test catches a log read that loses the time zone (+05:30, no DST)
TIMEZONE = "Asia/Kolkata"


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def server_binaries() -> Path | None:
    """The folder holding initdb and pg_ctl: the PATH's, else Debian's newest version."""
    on_path = shutil.which("pg_ctl")
    if on_path and (Path(on_path).parent / "initdb").is_file():
        return Path(on_path).parent
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else None


@dataclass
class PostgresServer:
    """A running cluster on ``127.0.0.1:port`` (trust authentication, superuser ``cxr``)."""

    binaries: Path
    folder: Path
    port: int
    owner: str | None  # the OS user that runs it when the tests run as root

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.binaries / tool), *args]
        if self.owner:
            command = ["runuser", "-u", self.owner, "--", *command]
        return subprocess.run(
            command, capture_output=True, text=True, timeout=120, cwd=self.folder
        )  # the server's owner may not enter the tests' working folder

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; its SQLAlchemy URL."""
        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        dsn = f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def start_postgres() -> PostgresServer:
    """initdb + pg_ctl start in a new temporary folder; raises RuntimeError with the
    server's own message when a step fails."""
    binaries = server_binaries()
    if binaries is None:
        raise FileNotFoundError(
            "PostgreSQL server binaries not found (no pg_ctl on the PATH, nothing in "
            "/usr/lib/postgresql/*/bin): apt-get install postgresql"
        )
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres").pw_name
        except KeyError as error:
            raise FileNotFoundError(
                "running as root and no 'postgres' OS user to run the server as "
                "(Debian's postgresql package creates it)"
            ) from error
        if shutil.which("runuser") is None:
            raise FileNotFoundError("running as root and no runuser (util-linux) to start it")
    folder = Path(tempfile.mkdtemp(prefix="cxr-pg-"))
    if owner:
        shutil.chown(folder, owner)
    server = PostgresServer(binaries, folder, free_port(), owner)
    steps = [
        ("initdb", "-D", str(server.data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
         "--no-sync"),
        ("pg_ctl", "-D", str(server.data), "-l", str(folder / "server.log"), "-w",
         "-t", "60", "-o",
         f"-c listen_addresses=127.0.0.1 -p {server.port} -k {folder} -c max_connections=200"
         f" -c timezone={TIMEZONE}",
         "start"),
    ]  # fmt: skip
    for tool, *args in steps:
        done = server.run(tool, *args)
        if done.returncode != 0:
            log = folder / "server.log"
            tail = log.read_text()[-2000:] if log.is_file() else ""
            shutil.rmtree(folder, ignore_errors=True)
            raise RuntimeError(f"{tool} failed: {done.stdout[-2000:]}{done.stderr[-2000:]}{tail}")
    return server


def stop_postgres(server: PostgresServer) -> None:
    server.run("pg_ctl", "-D", str(server.data), "-m", "fast", "-w", "stop")
    shutil.rmtree(server.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL cluster for the session (see the module's docstring)."""
    try:
        server = start_postgres()
    except (FileNotFoundError, RuntimeError) as error:
        _unavailable(f"no PostgreSQL server for the tests: {error}")
    yield server
    stop_postgres(server)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The SQLAlchemy URL of a new empty database on the session's PostgreSQL server."""
    return postgres_server.create_database()
