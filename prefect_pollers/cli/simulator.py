"""``prefect-pollers simulator``: the provider simulator on loopback."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect_pollers.ops.serving import bind_or_report
from prefect_pollers.testing.simulator.app import PREFIXES
from prefect_pollers.testing.simulator.config import SimulatorConfig
from prefect_pollers.testing.simulator.runner import serve

DESCRIPTION = (
    "Serve a local simulator of the Exona, Twyn, APIXO, ModelRoute and generic job APIs "
    "(control routes under /_sim)."
)
OVERRIDES = {
    "time_scale": "real seconds per simulated second (0.01: a 60 s job takes 0.6 s)",
    "seed": "random seed (runs are reproducible)",
    "failure_rate": "fraction of jobs that fail",
    "never_finish_rate": "fraction of jobs that never finish",
    "cache_hit_rate": "fraction of Exona scans answered from the cache",
    "api_key": "the API key every provider accepts",
}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's options to ``parser``."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    parser.add_argument("--port", type=int, default=8765, help="port to bind (0: any free port)")
    parser.add_argument("--config", type=Path, help="JSON file of SimulatorConfig fields")
    types: dict[str, Callable[[str], object]] = {"seed": int, "api_key": str}
    for field, help_text in OVERRIDES.items():
        flag = "--" + field.replace("_", "-")
        parser.add_argument(flag, dest=field, type=types.get(field, float), help=help_text)
    parser.add_argument(
        "--fault",
        dest="faults",
        action="append",
        default=[],
        metavar="JSON",
        help='a FaultRule as JSON, e.g. \'{"kind": "http_503", "rate": 0.1}\' (repeatable)',
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn log level",
    )


def add_simulator_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``simulator`` sub-command on an argparse sub-parsers object."""
    parser = subparsers.add_parser("simulator", help=DESCRIPTION, description=DESCRIPTION)
    configure_parser(parser)


def build_config(args: argparse.Namespace) -> SimulatorConfig:
    """The configuration from ``--config``, then the individual options on top."""
    fields: dict[str, Any] = {}
    if args.config is not None:
        fields = json.loads(args.config.read_text())
    for field in OVERRIDES:
        if getattr(args, field) is not None:
            fields[field] = getattr(args, field)
    if args.faults:
        fields["faults"] = list(fields.get("faults", [])) + [json.loads(f) for f in args.faults]
    return SimulatorConfig.model_validate(fields)


def run_simulator_cli(args: argparse.Namespace) -> int:
    """Serve the simulator until Ctrl-C; returns the process exit code.

    SIGTERM also shuts the server down gracefully, after which uvicorn re-raises it,
    so the process ends by that signal as a plain uvicorn server does.
    """
    try:
        config = build_config(args)
    except (OSError, ValueError) as exc:
        print(f"simulator: invalid configuration: {exc}", file=sys.stderr)
        return 2
    sock = bind_or_report("simulator", args.host, args.port)
    if sock is None:
        return 1
    host, port = sock.getsockname()[:2]
    print(f"Simulator on http://{host}:{port} (time_scale={config.time_scale})", flush=True)
    for name, prefix in PREFIXES.items():
        print(f"  {name:<11} http://{host}:{port}{prefix}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the Ctrl-C it shut down on
        serve(config, sock, log_level=args.log_level)
    return 0
