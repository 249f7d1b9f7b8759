"""Real processes for end-to-end tests: a Prefect server, workers, the receiver."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from prefect.client.orchestration import PrefectClient, get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

PREFECT = (sys.executable, "-m", "prefect")
T = TypeVar("T")


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """The ids of every process under ``pid`` (children, theirs, ...), from ``/proc``."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class Process:
    """A subprocess in a session of its own, its output in a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        """Start ``args`` in ``log_dir``; stdout and stderr go to ``log_dir/<name>.log``."""
        self.name = name
        self.log = log_dir / f"{name}.log"
        with open(self.log, "wb") as out:
            self.popen = subprocess.Popen(
                args,
                env=env,
                cwd=log_dir,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def tail(self, lines: int = 40) -> str:
        """The end of the process's output, for failure messages."""
        text = self.log.read_text(errors="replace").splitlines()[-lines:]
        return f"--- last lines of {self.name}'s output ---\n" + "\n".join(text)

    def kill_tree(self) -> int:
        """Freeze, then SIGKILL, the process and every descendant at once (a lost node):
        none of them gets to react, report or clean up. Returns how many were killed."""
        tree = [self.popen.pid, *descendants(self.popen.pid)]
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for pid in tree:
                with suppress(ProcessLookupError):
                    os.kill(pid, sig)
        self.popen.wait(30)
        return len(tree)

    def stop(self, sig: signal.Signals, timeout: float) -> None:
        """Send ``sig`` to the process group, SIGKILL it after ``timeout`` s and any leftover.

        Leftovers are the group and every descendant seen before the signal, including
        those in sessions of their own (a worker's flow-run processes).
        """
        tree = descendants(self.popen.pid) if self.popen.poll() is None else []
        if self.popen.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        with suppress(ProcessLookupError):  # children (flow runs) that outlived the leader
            os.killpg(self.popen.pid, signal.SIGKILL)
        for pid in tree:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def subprocess_env(home: Path, api_url: str) -> dict[str, str]:
    """The environment of every subprocess: its own Prefect home, quiet, this server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        DO_NOT_TRACK="1",
        PREFECT_HOME=str(home),
        PREFECT_API_URL=api_url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_LOGGING_LEVEL="CRITICAL",
        PREFECT_SERVER_UI_ENABLED="false",
        PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL="1",
        PREFECT_WORKER_QUERY_SECONDS="1",
    )
    return env


def wait_healthy(api_url: str, server: Process, timeout: float = 120) -> None:
    """Wait until ``GET /api/health`` answers, or fail with the server's output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.popen.poll() is not None:
            pytest.fail(f"the Prefect server exited {server.popen.returncode}\n{server.tail()}")
        with suppress(httpx.HTTPError):
            if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    pytest.fail(f"the Prefect server was not healthy after {timeout} s\n{server.tail()}")


@asynccontextmanager
async def api_client(api_url: str) -> AsyncIterator[PrefectClient]:
    """A Prefect client of the server at ``api_url``."""
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        async with get_client() as client:
            yield client


async def poll(read: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout: float) -> T:
    """Await ``read()`` every half second until ``done(result)`` or ``timeout``; the last result."""
    deadline = time.monotonic() + timeout
    result = await read()
    while not done(result) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        result = await read()
    return result
