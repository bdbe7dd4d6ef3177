"""A throwaway PostgreSQL server for the arena's scale-out tests.

Debian's `postgresql` package provides the binaries; the server runs as the `postgres` user
(initdb refuses root) from a fresh data directory, listens only on 127.0.0.1 at a free port,
trusts local connections, and is stopped at the end of the session. Where PostgreSQL or the
`postgres` user is missing the tests are skipped, unless OPTARENA_REQUIRE_POSTGRES=1 (CI sets
it after installing the package), which turns the skip into a failure.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile

import pytest


def _bindir() -> str | None:
    for cand in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True):
        if os.path.exists(os.path.join(cand, "initdb")):
            return cand
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(args: list[str]) -> subprocess.CompletedProcess:
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        cmd = [runuser, "-u", "postgres", "--", *args] if runuser else ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(args)]
    else:
        cmd = args
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _unavailable(reason: str) -> None:
    if os.environ.get("OPTARENA_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL required (OPTARENA_REQUIRE_POSTGRES=1) but {reason}")
    pytest.skip(f"PostgreSQL unavailable: {reason} (apt-get install postgresql)")


def start_server():
    """Start a server; yields its URL; stops it afterwards (a generator for a pytest fixture)."""
    bindir = _bindir()
    if bindir is None:
        _unavailable("no /usr/lib/postgresql/*/bin/initdb")
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        _unavailable("no `postgres` user")
    if os.geteuid() not in (0, user.pw_uid):
        _unavailable("the tests must run as root or as postgres to start a server")
    data = tempfile.mkdtemp(prefix="optarena-pg-")
    os.chown(data, user.pw_uid, user.pw_gid)
    port = _free_port()
    init = _as_postgres([f"{bindir}/initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync"])
    if init.returncode != 0:
        shutil.rmtree(data, ignore_errors=True)
        pytest.fail(f"initdb failed: {init.stderr or init.stdout}")
    opts = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
    start = _as_postgres([f"{bindir}/pg_ctl", "-D", data, "-o", opts, "-l", f"{data}/server.log", "-w", "start"])
    if start.returncode != 0:
        log = open(f"{data}/server.log").read() if os.path.exists(f"{data}/server.log") else ""
        shutil.rmtree(data, ignore_errors=True)
        pytest.fail(f"pg_ctl start failed: {start.stderr or start.stdout}\n{log}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        _as_postgres([f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"])
        shutil.rmtree(data, ignore_errors=True)
