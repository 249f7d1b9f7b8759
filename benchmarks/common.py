"""What the benchmarks share: JSON output, peak memory, CPU, the simulator process."""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from deployments.postgres import server_env
from prefect_pollers.testing.registry import provider_entry


def emit(name: str, **figures: object) -> None:
    """Print one JSON line: the benchmark's name and its figures."""
    print(json.dumps({"benchmark": name, **figures}, default=str), flush=True)


def stop_process_group(
    process: subprocess.Popen, timeout: float = 30, sig: int = signal.SIGTERM
) -> bool:
    """Stop ``process`` and its process group: ``sig``, then SIGKILL after ``timeout`` s.

    For teardown: it never raises (a benchmark's figures are printed before it runs, and
    a process that does not stop in time is killed, not waited for). ``process`` should
    lead its own group (``start_new_session=True``); otherwise only it is signalled.
    Returns whether it stopped on ``sig`` (False: it had to be killed).
    """
    if process.poll() is not None:
        return True
    leads_group = _leads_group(process.pid)
    # Children in sessions of their own (a worker's flow-run processes) are not in the
    # group: note them now, kill what is left of them at the end.
    others = _descendants(process.pid)

    def send(signal_number: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if leads_group:
                os.killpg(process.pid, signal_number)
            else:
                os.kill(process.pid, signal_number)

    send(sig)
    try:
        process.wait(timeout)
        stopped = True
    except subprocess.TimeoutExpired:
        print(
            f"teardown: pid {process.pid} did not stop {timeout:g} s after signal {sig}: killed",
            file=sys.stderr,
            flush=True,
        )
        stopped = False
    send(signal.SIGKILL)  # what is left of the group (children that outlived the leader)
    for pid in others:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)
    return stopped


def _descendants(pid: int) -> list[int]:
    """The ids of every process under ``pid`` (children, theirs, ...), read from ``/proc``."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _leads_group(pid: int) -> bool:
    """Whether ``pid`` leads its process group (so the group can be signalled)."""
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def cpu_seconds() -> float:
    """CPU time (user + system) this process has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


@dataclass
class SimulatorProcess:
    """A simulator served by a child process (so its CPU and memory are not ours)."""

    url: str
    process: subprocess.Popen

    def stats(self) -> dict:
        """The simulator's counters."""
        return httpx.get(f"{self.url}/_sim/stats", timeout=30).json()

    def base_url(self, provider: str) -> str:
        """A provider's base URL on this simulator."""
        return self.url + provider_entry(provider).simulator_prefix


@contextmanager
def simulator_process(config: dict) -> Iterator[SimulatorProcess]:
    """Start ``prefect-pollers simulator`` on a free loopback port with ``config``; stop it."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as config_file:
        json.dump(config, config_file)
    args = [
        sys.executable,
        "-m",
        "prefect_pollers.cli",
        "simulator",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--log-level",
        "warning",
        "--config",
        config_file.name,
    ]
    process = subprocess.Popen(
        args, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    try:
        line = process.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+)", line)
        if not match:
            raise RuntimeError(f"the simulator did not start: {line!r}")
        url = match.group(1)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/_sim/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield SimulatorProcess(url=url, process=process)
    finally:
        stop_process_group(process, timeout=10)
        os.unlink(config_file.name)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrefectServerProcess:
    """``prefect server start`` on a loopback port with its own home (and database).

    It can be stopped and started again on the same port and database, as an API
    outage is. The home is removed by :meth:`cleanup`. Its database is SQLite in the
    home unless ``database_url`` names another (e.g. ``deployments.postgres``'s).
    """

    def __init__(self, database_url: str | None = None) -> None:
        self.database_url = database_url
        self.home = tempfile.mkdtemp(prefix="pollers-bench-prefect-")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> None:
        """Start the server and wait until it is healthy."""
        env = {
            **os.environ,
            "PREFECT_HOME": self.home,
            "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_LOGGING_LEVEL": "ERROR",
            "PREFECT_UI_ENABLED": "false",
            **(server_env(self.database_url) if self.database_url else {}),
        }
        env.pop("PREFECT_API_URL", None)
        self.process = subprocess.Popen(
            [
                os.path.join(os.path.dirname(sys.executable), "prefect"),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its group (the server's own children) is stopped with it
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("the Prefect server did not start")
            time.sleep(0.3)

    def stop(self) -> None:
        """Stop the server and its children (SIGINT, then SIGKILL after 20 s); never raises."""
        if self.process is None:
            return
        stop_process_group(self.process, timeout=20, sig=signal.SIGINT)
        self.process = None

    def cleanup(self) -> None:
        """Stop the server and remove its home."""
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)


@contextmanager
def prefect_server(
    existing: str | None = None, *, database_url: str | None = None
) -> Iterator[str]:
    """A real ``prefect server start`` on a free loopback port; yields its API URL.

    Args:
        existing: An API URL to use instead (no server is started).
        database_url: The server's database (``PREFECT_API_DATABASE_CONNECTION_URL``);
            by default SQLite in the server's home.
    """
    if existing:
        yield existing
        return
    server = PrefectServerProcess(database_url)
    try:
        server.start()
        yield server.url
    finally:
        server.cleanup()


def child_env(api_url: str, storage: str) -> dict[str, str]:
    """The environment of a flow process that talks to ``api_url``."""
    return {
        **os.environ,
        "PREFECT_API_URL": api_url,
        "DO_NOT_TRACK": "1",
        "PREFECT_LOCAL_STORAGE_PATH": storage,
        "PYTHONPATH": os.getcwd(),
    }


def run_child(args: list[str], env: dict[str, str]) -> dict:
    """Run ``python -m benchmarks.<...>`` in a child process; return its last JSON line."""
    done = subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(lines[-1])
