"""The production layout of ``deployments/compose.yaml``, read without Docker.

The compose file is parsed and its variables put in as compose would; the services'
commands are checked against the real ``prefect-pollers`` parser and the pool of
``deployments/prefect.yaml``, the image against ``deployments/Dockerfile``.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from prefect_pollers import cli
from prefect_pollers.cli import simulator as simulator_cli
from prefect_pollers.cli import webhooks as webhooks_cli

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest's own dependency
    import tomli as tomllib

ROOT = Path(__file__).parents[1]
DEPLOYMENTS = ROOT / "deployments"
# ``$$``, ``${NAME}``, ``${NAME:-default}``, ``${NAME-default}``, ``${NAME:?error}``.
VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?])([^}]*))?\}")
SECRETS = {"POSTGRES_PASSWORD": "pg-secret", "PREFECT_API_AUTH_STRING": "admin:api-secret"}


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """``value`` with compose's variable syntax replaced from ``env``, recursively."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, operator, argument = match.groups()
        if name is None:
            return "$"
        if name in env and (env[name] or not operator or not operator.startswith(":")):
            return env[name]
        if operator and operator.endswith("?"):
            pytest.fail(f"compose refuses to start without {name}: {argument}")
        return argument if operator else ""

    return VARIABLE.sub(substitute, value)


def services(**env: str) -> dict[str, Any]:
    """The compose file's services as compose reads them with ``env`` (and the secrets)."""
    config = yaml.safe_load((DEPLOYMENTS / "compose.yaml").read_text())
    found: dict[str, Any] = interpolate(config["services"], {**SECRETS, **env})
    return found


def argv(service: dict[str, Any]) -> list[str]:
    """A service's command as a list of arguments."""
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def parsed(arguments: list[str], monkeypatch: pytest.MonkeyPatch) -> argparse.Namespace:
    """``prefect-pollers <arguments>`` parsed by the real command line, not run."""
    seen: list[argparse.Namespace] = []

    def record(args: argparse.Namespace) -> int:
        seen.append(args)
        return 0

    monkeypatch.setattr(cli, "run_recovery_cli", record)
    monkeypatch.setattr(cli, "run_poller_cli", record)
    monkeypatch.setattr(simulator_cli, "run_simulator_cli", record)
    monkeypatch.setattr(webhooks_cli, "run_webhooks_cli", record)
    assert cli.main(arguments) == 0
    [args] = seen
    return args


def test_the_server_runs_on_the_postgres_service() -> None:
    found = services()
    postgres, server = found["postgres"], found["server"]
    assert postgres["image"].startswith("postgres:15")
    assert postgres["healthcheck"]["test"]
    assert any(volume.endswith(":/var/lib/postgresql/data") for volume in postgres["volumes"])
    assert argv(server)[:3] == ["prefect", "server", "start"]
    assert "0.0.0.0" in argv(server)
    assert server["depends_on"]["postgres"]["condition"] == "service_healthy"

    env = server["environment"]
    url = env["PREFECT_API_DATABASE_CONNECTION_URL"]
    user = postgres["environment"]["POSTGRES_USER"]
    database = postgres["environment"]["POSTGRES_DB"]
    # Prefect puts the password setting in place of its placeholder.
    assert url == (
        f"postgresql+asyncpg://{user}:${{PREFECT_SERVER_DATABASE_PASSWORD}}"
        f"@postgres:5432/{database}"
    )
    assert env["PREFECT_SERVER_DATABASE_PASSWORD"] == postgres["environment"]["POSTGRES_PASSWORD"]


def test_workers_are_replicas_on_the_deployments_pool() -> None:
    prefect_yaml = yaml.safe_load((DEPLOYMENTS / "prefect.yaml").read_text())
    pools = {deployment["work_pool"]["name"] for deployment in prefect_yaml["deployments"]}
    assert len(pools) == 1
    worker = services()["worker"]
    assert argv(worker) == [
        *("prefect", "worker", "start", "--pool", pools.pop(), "--type", "process")
    ]
    assert str(worker["deploy"]["replicas"]) == "2"
    assert str(services(WORKERS="5")["worker"]["deploy"]["replicas"]) == "5"


def test_webhooks_and_poller_run_real_prefect_pollers_commands(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    found = services()
    webhooks, poller = argv(found["webhooks"]), argv(found["poller"])
    assert webhooks[0] == poller[0] == "prefect-pollers"

    receiver = parsed(webhooks[1:], monkeypatch)
    assert (receiver.command, receiver.webhooks_command) == ("webhooks", "serve")
    assert (receiver.host, receiver.port) == ("0.0.0.0", 8780)
    assert receiver.blocks == ["apixo-credentials/apixo-callbacks"]
    custom = argv(services(WEBHOOK_BLOCK="apixo-credentials/prod")["webhooks"])
    assert parsed(custom[1:], monkeypatch).blocks == ["apixo-credentials/prod"]

    service = parsed(poller[1:], monkeypatch)
    assert (service.command, service.shard) == ("poller", None)  # leased shards


def test_clients_reach_the_server_and_share_result_storage() -> None:
    found = services()
    auth = found["server"]["environment"]["PREFECT_SERVER_API_AUTH_STRING"]
    assert auth == SECRETS["PREFECT_API_AUTH_STRING"]
    for name in ("worker", "webhooks", "poller"):
        env = found[name]["environment"]
        assert env["PREFECT_API_URL"] == "http://server:4200/api", name
        assert env["PREFECT_API_AUTH_STRING"] == auth, name
        assert found[name]["depends_on"]["server"]["condition"] == "service_healthy", name
    storage = {
        found[name]["environment"]["PREFECT_LOCAL_STORAGE_PATH"] for name in ("worker", "poller")
    }
    volumes = {tuple(found[name]["volumes"]) for name in ("worker", "poller")}
    assert len(storage) == 1 and volumes == {(f"results:{storage.pop()}",)}


def test_secrets_come_from_the_environment_only() -> None:
    raw = yaml.safe_load((DEPLOYMENTS / "compose.yaml").read_text())["services"]
    secret_values = [
        (service, key, value)
        for service, config in raw.items()
        for key, value in (config.get("environment") or {}).items()
        if "PASSWORD" in key or "AUTH_STRING" in key
    ]
    assert len(secret_values) >= 5
    for service, key, value in secret_values:
        assert re.fullmatch(r"\$\{\w+:\?[^}]*\}", value), (service, key, value)


def test_the_image_installs_the_package_with_the_receiver_s_extra() -> None:
    dockerfile = (DEPLOYMENTS / "Dockerfile").read_text()
    assert "pip install '.[webhooks]' -c constraints/prefect-3.9.txt" in dockerfile
    # The 3.9 line's Pythons are 3.11 and newer (Prefect 3.9 requires 3.11).
    assert re.search(r"^FROM python:3\.1[1-9]-", dockerfile, re.M)
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert {"uvicorn", "starlette"} <= {re.split(r"[<>=\[ ]", d)[0] for d in extras["webhooks"]}
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            *sources, _ = line.split()[1:]
            assert all((ROOT / source).exists() for source in sources), line
    config = yaml.safe_load((DEPLOYMENTS / "compose.yaml").read_text())
    for name in ("server", "worker", "webhooks", "poller"):
        build = config["services"][name]["build"]
        assert (DEPLOYMENTS / build["context"] / build["dockerfile"]).resolve() == (
            DEPLOYMENTS / "Dockerfile"
        ), name


def test_the_workers_and_the_poller_share_a_ledger_database_on_postgres() -> None:
    found = services()
    postgres = found["postgres"]
    assert "./postgres-init:/docker-entrypoint-initdb.d:ro" in postgres["volumes"]
    init = (DEPLOYMENTS / "postgres-init" / "10-pollers-ledger.sql").read_text()
    assert "CREATE DATABASE pollers_ledger" in init
    urls = {
        found[name]["environment"]["PREFECT_POLLERS_LEDGER_URL"] for name in ("worker", "poller")
    }
    password = postgres["environment"]["POSTGRES_PASSWORD"]
    assert urls == {f"postgresql://prefect:{password}@postgres:5432/pollers_ledger"}
