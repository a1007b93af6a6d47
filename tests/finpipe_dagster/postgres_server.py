"""A throwaway PostgreSQL server from Debian's packages, for tests of Dagster's storage.

Installs ``postgresql`` with apt when its binaries are missing (as root), then
``initdb`` into a temporary folder and ``pg_ctl start`` on a free loopback port, with
password authentication over TCP. PostgreSQL refuses to run as root, so as root every
server command runs as the ``postgres`` user (``runuser``), which owns the data folder.
Any failure raises :class:`PostgresUnavailable` with what to fix; nothing is skipped.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.support.network import free_port

SERVER_USER = "postgres"
ADMIN_ROLE = "finpipe"


class PostgresUnavailable(RuntimeError):
    """PostgreSQL could not be installed or started; the message says why."""


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_major, reverse=True)
    return Path(found[0]).parent if found else None


def _major(initdb: str) -> int:
    version = Path(initdb).parts[-3]
    return int(version) if version.isdigit() else 0


def ensure_installed() -> Path:
    """The folder of ``initdb``/``pg_ctl``, installing Debian's ``postgresql`` if needed."""
    found = _bin_dir()
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise PostgresUnavailable(
            "PostgreSQL server binaries are missing (/usr/lib/postgresql/*/bin) and cannot be "
            "installed from here: run `sudo apt-get install -y postgresql` and re-run the tests"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "-q", "update"],
        ["apt-get", "-q", "install", "-y", "--no-install-recommends", "postgresql"],
    ):
        result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise PostgresUnavailable(
                f"`{' '.join(argv)}` failed ({result.returncode}):\n{result.stderr[-2000:]}"
            )
    found = _bin_dir()
    if not found:
        raise PostgresUnavailable("apt installed postgresql, but no initdb in /usr/lib/postgresql")
    return found


@dataclass
class PostgresServer:
    """One running server: its folder, port and the admin role's password."""

    bin_dir: Path
    root: Path
    port: int
    password: str

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def url(self, database: str) -> str:
        return f"postgresql://{ADMIN_ROLE}:{self.password}@127.0.0.1:{self.port}/{database}"

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / argv[0]), *argv[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=False, cwd=self.root)

    def _check(self, result: subprocess.CompletedProcess[str], what: str) -> None:
        if result.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise PostgresUnavailable(
                f"{what} failed ({result.returncode}): {result.stderr.strip()}\n{tail}"
            )

    def start(self) -> None:
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam(SERVER_USER)
            except KeyError:
                raise PostgresUnavailable(
                    f"running as root, and there is no '{SERVER_USER}' user to run the server "
                    "(PostgreSQL refuses root): reinstall Debian's postgresql package"
                ) from None
            for path in (self.root, pwfile):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        self._check(
            self._run(
                "initdb",
                "-D", str(self.data_dir),
                "-U", ADMIN_ROLE,
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--no-sync",
            ),
            "initdb",
        )  # fmt: skip
        pwfile.unlink()
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._check(
            self._run(
                "pg_ctl", "start", "-w", "-t", "60",
                "-D", str(self.data_dir),
                "-l", str(self.root / "server.log"),
                "-o", options,
            ),
            "pg_ctl start",
        )  # fmt: skip

    def create_database(self, name: str) -> None:
        import psycopg2

        conn = psycopg2.connect(self.url("postgres"))
        try:
            conn.autocommit = True  # CREATE DATABASE refuses to run in a transaction
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.data_dir))
        shutil.rmtree(self.root, ignore_errors=True)


def start_server() -> PostgresServer:
    """Install if needed, then a fresh server on a free port (the caller stops it)."""
    bin_dir = ensure_installed()
    root = Path(tempfile.mkdtemp(prefix="finpipe-pg-"))
    server = PostgresServer(bin_dir, root, free_port(), secrets.token_urlsafe(16))
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server
