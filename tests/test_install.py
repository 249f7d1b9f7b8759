"""What the package needs installed: its core imports without the optional server stacks.

Each import check runs in a fresh interpreter whose ``sys.meta_path`` refuses the named
top-level packages, imports a module and every name of its ``__all__``, so an import of a
refused package anywhere on the way fails the check.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest's own dependency
    import tomli as tomllib

ROOT = Path(__file__).parents[1]

BLOCKED_IMPORT = textwrap.dedent(
    """
    import importlib
    import sys

    BLOCKED = set(sys.argv[1].split(","))

    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"blocked for this test: {name}", name=name)
            return None

    sys.meta_path.insert(0, Refuse())
    for name in sys.argv[2:]:
        module = importlib.import_module(name)
        for attribute in getattr(module, "__all__", ()):  # a lazy public API too
            getattr(module, attribute)
    leaked = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
    assert not leaked, leaked
    print("imported", *sys.argv[2:])
    """
)


def import_without(blocked: list[str], *modules: str) -> subprocess.CompletedProcess[str]:
    """Import ``modules`` and their public names in an interpreter refusing ``blocked``."""
    return subprocess.run(
        [sys.executable, "-c", BLOCKED_IMPORT, ",".join(blocked), *modules],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow  # 16 s: a subprocess imports Prefect
def test_package_imports_without_server_stacks():
    """The simulator's uvicorn and FastAPI are not needed to use the collection.

    Starlette cannot be refused: Prefect itself imports it.
    """
    done = import_without(["uvicorn", "fastapi"], "prefect_pollers")
    assert done.returncode == 0, done.stderr[-3000:]


def test_engine_imports_without_prefect():
    """The engine is pure polling machinery: importable without Prefect (DESIGN.md)."""
    done = import_without(["prefect"], "prefect_pollers.engine")
    assert done.returncode == 0, done.stderr[-3000:]


def test_core_dependencies_are_bounds_and_server_deps_an_extra():
    """pyproject.toml: lower/upper bounds (pins live in constraints.txt); servers in extras."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_name(req): req for req in project["dependencies"]}
    assert set(core) == {
        "prefect",
        "httpx",
        "pydantic",
        "jmespath",
        "standardwebhooks",
        "exceptiongroup",  # Python < 3.11 only: batch/items.py unwraps a task group's signal
    }
    for req in core.values():
        assert "==" not in req and ">=" in req, f"{req}: a bound, not a pin"
    for extra in ("simulator", "webhooks"):
        servers = {_name(req) for req in project["optional-dependencies"][extra]}
        assert {"uvicorn", "starlette"} <= servers, extra
    assert project["requires-python"] == ">=3.10"


def test_constraints_pin_what_the_server_needs():
    """constraints.txt holds Prefect 3.8 and the limits its server and scheduler need."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        spec = line.split("#")[0].split(";")[0].strip()
        if spec:
            name, _, version = spec.partition("==")
            assert version, f"{line}: an exact pin"
            pins.setdefault(_name(name), version)
    assert pins["prefect"].startswith("3.8.")
    assert tuple(int(p) for p in pins["fastapi"].split(".")[:2]) < (0, 151)
    assert pins["sqlalchemy"].startswith("2.0.")


def _name(requirement: str) -> str:
    """The normalized project name at the start of a requirement string."""
    for stop in "<>=!~[; ":
        requirement = requirement.split(stop)[0]
    return requirement.strip().lower().replace("_", "-")
