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
    """pyproject.toml: lower/upper bounds (pins live in constraints/); servers in extras."""
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


LINES = {"3.8": "3.10", "3.9": "3.11"}  # each tested Prefect line and its oldest Python


def _pins(line: str) -> dict[str, list[str]]:
    """Every exact pin of a line's constraints file, by normalized name (markers aside)."""
    pins: dict[str, list[str]] = {}
    for text in (ROOT / "constraints" / f"prefect-{line}.txt").read_text().splitlines():
        spec = text.split("#")[0].split(";")[0].strip()
        if spec:
            name, _, version = spec.partition("==")
            assert version, f"{text}: an exact pin"
            pins.setdefault(_name(name), []).append(version)
    return pins


@pytest.mark.parametrize("line", sorted(LINES))
def test_each_line_pins_its_prefect(line: str) -> None:
    """One constraints file per tested line; each pins its own Prefect and the server's stack."""
    pins = _pins(line)
    assert [v.rsplit(".", 1)[0] for v in pins["prefect"]] == [line]
    for name in ("fastapi", "sqlalchemy", "starlette", "uvicorn", "pydantic", "pydantic-core"):
        assert pins[name], name
    # Prefect 3.9.1 requires fastapi<0.151 itself; SQLAlchemy 2.1 requires Python 3.11.
    assert all(tuple(int(p) for p in v.split(".")[:2]) < (0, 151) for v in pins["fastapi"])
    assert {v.rsplit(".", 1)[0] for v in pins["sqlalchemy"]} == {"2.0" if line == "3.8" else "2.1"}
    assert sorted(LINES) == sorted(
        p.stem.removeprefix("prefect-") for p in (ROOT / "constraints").glob("prefect-*.txt")
    )


def _make_install(*args: str) -> subprocess.CompletedProcess[str]:
    """What `make install` would run (`make -n`), for a venv that does not exist."""
    return subprocess.run(
        ["make", "-n", "install", f"PYTHON={sys.executable}", "VENV=.venv-no-such", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "line"),
    [
        ((), "3.8" if sys.version_info < (3, 11) else "3.9"),  # this interpreter's line
        (("VENV_PY_MINOR=10",), "3.8"),
        (("VENV_PY_MINOR=11",), "3.9"),
        (("VENV_PY_MINOR=13",), "3.9"),
        (("VENV_PY_MINOR=13", "LINE=3.8"), "3.8"),
    ],
)
def test_make_installs_with_the_line_of_the_venv_s_python(args: tuple[str, ...], line: str):
    """Python 3.10 takes the 3.8 line, newer ones the 3.9 line, unless LINE= says otherwise."""
    done = _make_install(*args)
    assert done.returncode == 0, done.stderr
    assert f"-c constraints/prefect-{line}.txt" in done.stdout


def test_make_refuses_a_line_the_python_cannot_install():
    refused = _make_install("VENV_PY_MINOR=10", "LINE=3.9")
    assert refused.returncode != 0 and "requires Python 3.11" in refused.stderr
    unknown = _make_install("LINE=3.7")
    assert unknown.returncode != 0 and "no constraints/prefect-3.7.txt" in unknown.stderr


def _name(requirement: str) -> str:
    """The normalized project name at the start of a requirement string."""
    for stop in "<>=!~[; ":
        requirement = requirement.split(stop)[0]
    return requirement.strip().lower().replace("_", "-")
