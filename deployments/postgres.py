"""A local PostgreSQL from Debian's ``postgresql`` package, and a Prefect server on it.

:func:`local_postgres` runs a PostgreSQL on a free loopback port (trust auth, no
password, loopback only) and yields the SQLAlchemy URL of its ``prefect`` database;
the scale-out benchmark and the e2e tests run their Prefect servers on it. SQLite
stays the default elsewhere (``make demo``, ``make test``'s other tests).

``durable=False`` turns off fsync, synchronous commit and full-page writes: a commit
returns before it is on disk, so an OS crash or power loss can lose recent commits or
corrupt the cluster. That is fine for a throwaway database (benchmarks, tests), which
then measures Prefect rather than this machine's disk; a kept one is durable.

A persistent PostgreSQL in ``.postgres`` and ``prefect server start`` on it (``make
server-postgres``); Ctrl-C or SIGTERM stops both, the server first::

    python -m deployments.postgres serve [--port 4200] [--data-dir .postgres]

As root it runs PostgreSQL as the ``postgres`` user (PostgreSQL refuses root) and gives
that user the data directory; as anyone else it runs as that user.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

PG_ROOT = Path("/usr/lib/postgresql")
OS_USER = "postgres"  # who runs PostgreSQL when we are root
SUPERUSER = "postgres"  # the database role the URL connects as
DATABASE = "prefect"
# A Prefect server opens up to pool_size + max_overflow connections per SQLAlchemy engine
# (one per event loop; a server has about two). With Prefect's 5 + 10, requests queue for
# a connection (pool_timeout: 30 s, then an error) once hundreds a second meet slower
# queries; 20 + 40 is headroom for that, and max_connections room for a few servers.
POOL_SIZE = 20
MAX_OVERFLOW = 40
MAX_CONNECTIONS = 300
NOT_DURABLE = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
SOCKET_PATH_MAX = 100  # a unix socket path is at most 107 bytes; ".s.PGSQL.<port>" is 15


def postgres_bin() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding the server and initdb.

    Raises:
        FileNotFoundError: PostgreSQL's server package is not installed.
    """
    found = [
        path.parent for path in PG_ROOT.glob("*/bin/postgres") if (path.parent / "initdb").is_file()
    ]
    if not found:
        raise FileNotFoundError(
            f"no PostgreSQL server under {PG_ROOT}/*/bin: "
            "install it with `apt-get install postgresql` (or `make postgresql`)"
        )
    return max(found, key=lambda bin_dir: [int(n) for n in bin_dir.parent.name.split(".")])


def server_env(database_url: str) -> dict[str, str]:
    """The environment variables that run a Prefect server on ``database_url``."""
    return {
        "PREFECT_API_DATABASE_CONNECTION_URL": database_url,
        "PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE": str(POOL_SIZE),
        "PREFECT_SERVER_DATABASE_SQLALCHEMY_MAX_OVERFLOW": str(MAX_OVERFLOW),
    }


def create_database(url: str, name: str) -> str:
    """Create database ``name`` beside the one ``url`` names (if absent); its URL.

    The ledger of prefect-pollers lives in a database of its own (``pollers_ledger``)
    on the PostgreSQL that serves Prefect.
    """
    import asyncio

    import asyncpg

    base, _, _ = url.rpartition("/")
    dsn = url.replace("postgresql+asyncpg://", "postgresql://")

    async def create() -> None:
        connection = await asyncpg.connect(dsn)
        try:
            found = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if not found:
                await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()

    asyncio.run(create())
    return f"{base}/{name}"


def _owner() -> dict[str, Any]:
    """``subprocess`` arguments that run PostgreSQL's programs as a user it accepts."""
    if os.geteuid() != 0:
        return {}
    try:
        pwd.getpwnam(OS_USER)
    except KeyError:
        raise RuntimeError(
            f"PostgreSQL does not run as root and there is no {OS_USER!r} user "
            "(Debian's postgresql package creates it)"
        ) from None
    return {"user": OS_USER, "group": OS_USER, "extra_groups": []}


def _free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _clean_env() -> dict[str, str]:
    """Our environment without libpq's ``PG*`` variables (they would redirect psql)."""
    return {key: value for key, value in os.environ.items() if not key.startswith("PG")}


def _initdb(bin_dir: Path, data_dir: Path) -> None:
    """Initialise a cluster in ``data_dir`` (absent or empty) with trust authentication."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    owner = _owner()
    if owner:
        shutil.chown(data_dir, OS_USER, OS_USER)
    done = subprocess.run(
        [
            str(bin_dir / "initdb"),
            *("--pgdata", str(data_dir), "--username", SUPERUSER),
            *("--auth", "trust", "--encoding", "UTF8", "--locale", "C"),
        ],
        cwd=data_dir,
        env=_clean_env(),
        capture_output=True,
        text=True,
        check=False,
        **owner,
    )
    if done.returncode != 0:
        raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stdout}{done.stderr}")


def _tail(log: Path, lines: int = 20) -> str:
    """The end of PostgreSQL's log, for error messages."""
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return f"--- last lines of {log} ---\n" + "\n".join(text)


def _stop(process: subprocess.Popen[bytes], timeout: float) -> None:
    """Fast shutdown (SIGINT to the postmaster); SIGKILL after ``timeout`` s."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _psql(bin_dir: Path, port: int, sql: str) -> str:
    """Run ``sql`` on database ``postgres`` as the superuser; its unaligned output."""
    done = subprocess.run(
        [
            str(bin_dir / "psql"),
            *("--no-psqlrc", "--tuples-only", "--no-align", "--set", "ON_ERROR_STOP=1"),
            *("--host", "127.0.0.1", "--port", str(port), "--username", SUPERUSER),
            *("--dbname", "postgres", "--command", sql),
        ],
        env=_clean_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"psql failed ({done.returncode}): {sql}\n{done.stderr}")
    return done.stdout.strip()


def _wait_ready(
    bin_dir: Path, port: int, process: subprocess.Popen[bytes], log: Path, timeout: float
) -> None:
    """Wait until PostgreSQL accepts connections; raise with its log if it exits first."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"PostgreSQL exited {process.returncode}\n{_tail(log)}")
        ready = subprocess.run(
            [str(bin_dir / "pg_isready"), "--host", "127.0.0.1", "--port", str(port)],
            env=_clean_env(),
            capture_output=True,
            check=False,
        )
        if ready.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"PostgreSQL was not ready after {timeout} s\n{_tail(log)}")
        time.sleep(0.1)


@contextmanager
def local_postgres(
    data_dir: Path | None = None, *, durable: bool = True, timeout: float = 60
) -> Iterator[str]:
    """A PostgreSQL on a free loopback port; yields its ``prefect`` database's URL.

    The URL is ``postgresql+asyncpg://postgres@127.0.0.1:<port>/prefect``, for
    ``PREFECT_API_DATABASE_CONNECTION_URL``. PostgreSQL is stopped at the end.

    Args:
        data_dir: The cluster's directory, initialised if it is absent or empty and
            kept; by default a temporary one, removed at the end.
        durable: False turns fsync, synchronous commit and full-page writes off, for
            throwaway databases (an OS crash can lose or corrupt data).
        timeout: Seconds to wait for PostgreSQL to start, and then to stop.
    """
    bin_dir = postgres_bin()
    temporary = data_dir is None
    if data_dir is None:
        data_dir = Path(tempfile.mkdtemp(prefix="pollers-postgres-"))
    data_dir = data_dir.resolve()
    try:
        if not (data_dir / "PG_VERSION").exists():
            _initdb(bin_dir, data_dir)
        port = _free_port()
        # The socket in the data dir keeps clusters apart (none in /run/postgresql);
        # a path too long for a socket gets none (every client here uses TCP).
        sockets = str(data_dir) if len(str(data_dir)) <= SOCKET_PATH_MAX else ""
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(port),
            "unix_socket_directories": sockets,
            "max_connections": str(MAX_CONNECTIONS),
            **({} if durable else NOT_DURABLE),
        }
        log = data_dir / "postgres.log"
        with open(log, "ab") as out:
            process = subprocess.Popen(
                [
                    str(bin_dir / "postgres"),
                    *("-D", str(data_dir)),
                    *(arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")),
                ],
                cwd=data_dir,
                env=_clean_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal's Ctrl-C is for us to pass on in order
                **_owner(),
            )
        try:
            _wait_ready(bin_dir, port, process, log, timeout)
            exists = f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"
            if not _psql(bin_dir, port, exists):
                _psql(bin_dir, port, f'CREATE DATABASE "{DATABASE}"')
            yield f"postgresql+asyncpg://{SUPERUSER}@127.0.0.1:{port}/{DATABASE}"
        finally:
            _stop(process, timeout)
    finally:
        if temporary:
            shutil.rmtree(data_dir, ignore_errors=True)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGINT and SIGTERM handler: stop (SIGINT too, if it came ignored, as in ``cmd &``)."""
    raise KeyboardInterrupt


def serve(port: int, data_dir: Path) -> int:
    """PostgreSQL in ``data_dir`` and a Prefect server on it until Ctrl-C or SIGTERM.

    Returns:
        0 when stopped by a signal, else the server's exit code.
    """
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _raise_interrupt)
    try:
        with local_postgres(data_dir) as url:
            print(f"PostgreSQL: {url} (data and postgres.log in {data_dir})", flush=True)
            # Out of the terminal's session (Ctrl-C is ours to pass on, after which it
            # stops PostgreSQL) and of its input: no profile prompt, the URL is printed.
            server = subprocess.Popen(
                [
                    *(sys.executable, "-m", "prefect", "--no-prompt", "server", "start"),
                    *("--host", "127.0.0.1", "--port", str(port)),
                ],
                env={**os.environ, **server_env(url)},
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                _announce(port, server)
                return server.wait()
            finally:
                _stop_server(server)
    except KeyboardInterrupt:
        return 0


def _announce(port: int, server: subprocess.Popen[bytes], timeout: float = 120) -> None:
    """Print the UI and API URLs once the server answers (or give up quietly)."""
    api = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + timeout
    while server.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                print(f"Prefect server on PostgreSQL: UI http://127.0.0.1:{port}, API {api}")
                print(f"  export PREFECT_API_URL={api}   # Ctrl-C stops both", flush=True)
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)


def _stop_server(server: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGTERM the server's process group; SIGKILL it after ``timeout`` s."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def main(argv: list[str] | None = None) -> int:
    """``python -m deployments.postgres serve``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m deployments.postgres", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser(
        "serve", help="a persistent local PostgreSQL and a Prefect server on it"
    )
    serve_parser.add_argument("--port", type=int, default=4200, help="the Prefect server's port")
    serve_parser.add_argument(
        "--data-dir", type=Path, default=Path(".postgres"), help="PostgreSQL's data directory"
    )
    args = parser.parse_args(argv)
    return serve(args.port, args.data_dir)


if __name__ == "__main__":
    sys.exit(main())
