"""A throwaway PostgreSQL server on 127.0.0.1, for the shared-study tests and benchmark.

Debian's ``postgresql`` binaries (``/usr/lib/postgresql/<version>/bin``) make a cluster in a
temporary folder (``initdb``, trust authentication for one superuser) and run ``postgres`` on
a free port, with its unix socket in the same folder and durability off (``fsync``,
``synchronous_commit``): a test cluster need not survive a power cut. PostgreSQL refuses to
run as root, so under root the server runs as an unprivileged system user (``postgres``,
which the Debian package creates, else ``nobody``). Nothing outside the folder is touched.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.support.sshd import free_port

PG_ROOT = Path("/usr/lib/postgresql")
SUPERUSER = "edgenas"


class PostgresMissing(RuntimeError):
    """The server binaries are not installed."""


def postgres_bin() -> Path:
    """The newest installed ``/usr/lib/postgresql/<version>/bin``."""
    found = sorted(
        (p for p in PG_ROOT.glob("*/bin") if (p / "postgres").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not found:
        raise PostgresMissing(
            f"no PostgreSQL server under {PG_ROOT}: run 'apt-get install postgresql' "
            "(make setup does it); the shared-study tests need a real server"
        )
    return found[-1]


@dataclass
class Postgres:
    folder: Path
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    host = "127.0.0.1"

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy/Optuna URL for ``database`` (SQLAlchemy 2.1 picks psycopg 3)."""
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; returns its URL."""
        with psycopg.connect(
            host=self.host, port=self.port, user=SUPERUSER, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"'.encode())
        return self.url(name)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # "fast" shutdown: clients are cut off
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def _server_user() -> tuple[int, int] | None:
    """(uid, gid) to run the server as, or None to run it as ourselves (not root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return entry.pw_uid, entry.pw_gid
    raise PostgresMissing("running as root and no 'postgres' or 'nobody' user to run the server as")


def start_postgres(*, timeout: float = 60.0) -> Postgres:
    """Start a fresh cluster; call ``stop()`` on the result (it also deletes the folder)."""
    bin_dir = postgres_bin()
    folder = Path(tempfile.mkdtemp(prefix="edgenas-pg-"))
    owner = _server_user()
    if owner is not None:
        os.chown(folder, *owner)
    uid, gid = owner if owner is not None else (None, None)
    groups: list[int] | None = [] if owner is not None else None
    env = {**os.environ, "LC_ALL": "C", "HOME": str(folder)}
    data, log = folder / "data", folder / "server.log"
    initdb = [str(bin_dir / "initdb"), "-D", str(data), "-U", SUPERUSER, "-A", "trust"]
    init = subprocess.run(
        [*initdb, "-E", "UTF8", "--no-sync"],
        capture_output=True,
        text=True,
        env=env,
        cwd=folder,
        check=False,
        user=uid,
        group=gid,
        extra_groups=groups,
    )
    if init.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {init.stderr.strip() or init.stdout.strip()}")
    port = free_port()
    settings = ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
    with log.open("wb") as out:
        listen = ["-h", "127.0.0.1", "-p", str(port), "-k", str(folder)]
        process = subprocess.Popen(
            [str(bin_dir / "postgres"), "-D", str(data), *listen]
            + [arg for setting in settings for arg in ("-c", setting)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=folder,
            user=uid,
            group=gid,
            extra_groups=groups,
        )
    server = Postgres(folder, port, process, log)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            text = log.read_text(errors="replace").strip()
            server.stop()
            raise RuntimeError(f"postgres exited with {process.returncode}: {text}")
        try:
            psycopg.connect(
                host=server.host, port=port, user=SUPERUSER, dbname="postgres", connect_timeout=2
            ).close()
            return server
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(
                    f"postgres did not accept connections within {timeout:.0f} s"
                ) from None
            time.sleep(0.1)


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[Postgres]:
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()
