"""``prefect-pollers webhooks serve``: the webhook receiver as a server process."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import Any

from prefect.blocks.core import Block
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL

from prefect_pollers.engine import PollerError
from prefect_pollers.ops.serving import HEADER_TIMEOUT_S, bind_or_report, uvicorn_server
from prefect_pollers.providers.base import JobApiCredentials
from prefect_pollers.providers.callbacks import CallbackCredentials
from prefect_pollers.webhooks.app import BODY_TIMEOUT_S, MAX_BODY_BYTES, create_webhook_app

DESCRIPTION = (
    "Serve the webhook receiver: verify callbacks for the given saved blocks and end the "
    "waits they name (through Prefect events for waits in other processes). Replays are "
    "refused across restarts and replicas through the ledger (PREFECT_POLLERS_LEDGER_URL)."
)


def add_webhooks_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``webhooks serve`` on an argparse sub-parsers object."""
    webhooks = subparsers.add_parser("webhooks", help="the webhook receiver")
    commands = webhooks.add_subparsers(dest="webhooks_command", required=True)
    serve = commands.add_parser("serve", help=DESCRIPTION, description=DESCRIPTION)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    serve.add_argument("--port", type=int, default=8780, help="port to bind (0: any free port)")
    serve.add_argument(
        "--block",
        dest="blocks",
        action="append",
        required=True,
        metavar="SLUG/NAME",
        help="a saved block whose callbacks to receive, e.g. apixo-credentials/apixo (repeatable)",
    )
    serve.add_argument(
        "--max-body-bytes", type=int, default=MAX_BODY_BYTES, help="largest body accepted"
    )
    serve.add_argument(
        "--header-timeout",
        type=float,
        default=HEADER_TIMEOUT_S,
        metavar="SECONDS",
        help="close a connection whose request headers take longer",
    )
    serve.add_argument(
        "--body-timeout",
        type=float,
        default=BODY_TIMEOUT_S,
        metavar="SECONDS",
        help="answer 408 to a request whose body takes longer",
    )
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn log level",
    )


async def _load_blocks(names: list[str]) -> list[JobApiCredentials[Any]]:
    blocks: list[JobApiCredentials[Any]] = []
    for name in names:
        try:
            block = await Block.aload(name)
        except (ValueError, ObjectNotFound) as exc:
            raise ValueError(
                f"cannot load block {name!r} ({exc}); give SLUG/NAME of a saved block, "
                "e.g. apixo-credentials/apixo"
            ) from None
        if not isinstance(block, JobApiCredentials):
            raise ValueError(f"block {name!r} is not a prefect-pollers credentials block")
        found: JobApiCredentials[Any] = block
        if isinstance(found, CallbackCredentials):
            found = await found.with_webhook_secret()  # the API's, where it answers it
        blocks.append(found)
    return blocks


def run_webhooks_cli(args: argparse.Namespace) -> int:
    """Serve the receiver until Ctrl-C or SIGTERM; returns the process exit code."""
    if not PREFECT_API_URL.value():
        print(
            "webhooks: set PREFECT_API_URL to your Prefect server's API: the receiver loads "
            "its blocks from it and emits callback events to it",
            file=sys.stderr,
        )
        return 2
    try:
        app = create_webhook_app(
            asyncio.run(_load_blocks(args.blocks)),
            max_body_bytes=args.max_body_bytes,
            body_timeout_s=args.body_timeout,
        )
    except (ValueError, PollerError) as exc:
        print(f"webhooks: {exc}", file=sys.stderr)
        return 2
    sock = bind_or_report("webhooks", args.host, args.port)
    if sock is None:
        return 1
    host, port = sock.getsockname()[:2]
    print(
        f"Webhook receiver on http://{host}:{port}/hooks/ for {', '.join(args.blocks)}", flush=True
    )
    try:
        with contextlib.suppress(KeyboardInterrupt):
            server = uvicorn_server(
                app,
                log_level=args.log_level,
                embedded=False,
                header_timeout_s=args.header_timeout,
            )
            server.run(sockets=[sock])
    finally:
        sock.close()
    return 0
