"""The package as a user installs it: one public list, blocks Prefect finds, files it ships."""

import inspect
import os
import re
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

import anyio
import pytest
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL

import prefect_pollers
import prefect_pollers.testing

ROOT = Path(__file__).parents[1]

PUBLIC = {
    # blocks and Prefect's job interface
    "AnthropicBatchCredentials",
    "ApixoCredentials",
    "OpenAIBatchCredentials",
    "ExonaCredentials",
    "HttpJobApi",
    "JobApiCredentials",
    "ModelRouteCredentials",
    "PollerJob",
    "PollerJobRun",
    "TwynCredentials",
    # tasks, batches, cancellation
    "BatchItem",
    "BatchOutcome",
    "DurableWait",
    "Outcome",
    "cancel_remote_jobs",
    "run_batch",
    "run_provider_batch",
    "OutcomeFiles",
    "run_job",
    "submit_job",
    "wait_for_job",
    # values
    "JobRef",
    "JobResult",
    "JobState",
    "JobStatus",
    "PollPolicy",
    # errors
    "AuthenticationError",
    "BadRequestError",
    "ContractMismatchError",
    "InvalidRequestError",
    "JobCancelledError",
    "JobEndedError",
    "JobExpiredError",
    "JobFailedError",
    "PollerError",
    "ProviderUnavailableError",
    "ResultUnavailableError",
    "WaitTimeoutError",
}

BLOCK_SLUGS = {
    "anthropic-batch-credentials",
    "apixo-credentials",
    "exona-credentials",
    "http-job-api",
    "modelroute-credentials",
    "openai-batch-credentials",
    "poller-job",
    "twyn-credentials",
}


def blocks_of(module):
    return [cls for _, cls in inspect.getmembers(module) if Block.is_block_class(cls)]


def test_the_public_api_is_one_list_of_what_a_user_needs():
    assert set(prefect_pollers.__all__) == PUBLIC | {"__version__"}
    assert len(prefect_pollers.__all__) == len(set(prefect_pollers.__all__))
    for name in prefect_pollers.__all__:
        assert getattr(prefect_pollers, name) is not None, name


def test_test_helpers_are_under_prefect_pollers_testing():
    for name in ("VirtualClock", "use_clock", "PROVIDERS"):
        assert not hasattr(prefect_pollers, name), name
        assert name in prefect_pollers.testing.__all__
    for name in prefect_pollers.testing.__all__:
        assert getattr(prefect_pollers.testing, name) is not None, name


def test_the_version_comes_from_the_package_metadata():
    assert prefect_pollers.__version__ == version("prefect-pollers")
    project = (ROOT / "pyproject.toml").read_text()
    assert f'version = "{prefect_pollers.__version__}"' in project


def test_every_block_is_a_member_of_the_package():
    """What `prefect block register -m prefect_pollers` walks: the package's members."""
    slugs = {cls.get_block_type_slug() for cls in blocks_of(prefect_pollers)}
    assert slugs == BLOCK_SLUGS | {"jobapicredentials"}  # the interface: never registered


@pytest.mark.slow  # a fresh interpreter imports Prefect
def test_the_collection_entry_point_registers_the_blocks():
    """Generic Prefect code, never importing prefect_pollers, loads block classes by slug."""
    code = (
        "import sys\n"
        "from prefect.blocks.core import Block\n"
        "assert 'prefect_pollers' not in sys.modules\n"
        f"for slug in {sorted(BLOCK_SLUGS)!r}:\n"
        "    print(slug, Block.get_block_class_from_key(slug).__module__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd="/", capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("prefect_pollers.") == len(BLOCK_SLUGS)


@pytest.mark.slow  # the Prefect CLI in a subprocess
@pytest.mark.usefixtures("prefect_harness")
async def test_prefect_block_register_registers_every_block():
    done = await anyio.run_process(
        [sys.executable, "-m", "prefect", "block", "register", "-m", "prefect_pollers"],
        env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()},
        check=False,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    async with get_client() as client:
        for cls in blocks_of(prefect_pollers):
            if cls.get_block_type_slug() not in BLOCK_SLUGS:
                continue
            block_type = await client.read_block_type_by_slug(cls.get_block_type_slug())
            assert block_type.name == cls.get_block_type_name()
            schema = await client.read_block_schema_by_checksum(cls._calculate_schema_checksum())
            assert set(schema.capabilities) == set(cls.get_block_capabilities())


@pytest.mark.usefixtures("prefect_harness")
async def test_a_saved_credentials_block_loads_as_a_credentials_block():
    from prefect.blocks.abstract import CredentialsBlock

    from prefect_pollers import ExonaCredentials

    await ExonaCredentials(api_key="k", base_url="http://sim").asave("pkg-exona", overwrite=True)
    loaded = await Block.aload("exona-credentials/pkg-exona")
    assert isinstance(loaded, ExonaCredentials) and isinstance(loaded, CredentialsBlock)
    async with loaded.get_client() as client:
        assert client.provider == "exona"


@pytest.mark.slow  # builds a wheel
def test_the_wheel_ships_py_typed_the_license_and_the_entry_point(tmp_path):
    """Built from a copy of the sources: the shared working tree gets no build/ directory."""
    source = tmp_path / "source"
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        (source / name).parent.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "prefect_pollers",
        source / "prefect_pollers",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = tmp_path.glob("prefect_pollers-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        dist_info = next(n.split("/")[0] for n in names if ".dist-info/" in n)
        metadata = archive.read(f"{dist_info}/METADATA").decode()
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
    assert "prefect_pollers/py.typed" in names
    assert "prefect_pollers/providers/catalog/fal.json" in names  # the catalog's data
    assert "prefect_pollers/testing/__init__.py" in names
    assert any(n.endswith("/LICENSE") for n in names)
    assert "Provides-Extra: testing" in metadata
    assert "[prefect.collections]\nprefect_pollers = prefect_pollers" in entry_points


def test_license_changelog_and_compatibility_statement():
    assert (
        "Apache License\n                           Version 2.0" in (ROOT / "LICENSE").read_text()
    )
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog
    assert f"## [{prefect_pollers.__version__}]" in changelog
    # The README and the docs' home page state every tested line (one constraints file
    # each: the Prefect it pins, on which Python CI tests it) and pyproject's classifiers.
    project = (ROOT / "pyproject.toml").read_text()
    pythons = re.findall(r"Python :: (3\.\d+)\"", project)
    assert pythons == ["3.10", "3.11", "3.12", "3.13"]
    ci = (ROOT / ".ci" / "run").read_text()
    for page in (ROOT / "README.md", ROOT / "docs" / "index.md"):
        text = " ".join(page.read_text().split())
        assert f"Python {pythons[0]} to {pythons[-1]}" in text, page
        assert "not installable" not in text and "untested" not in text, page
        for line, python in (("3.8", "3.10"), ("3.9", "3.13")):
            pins = (ROOT / "constraints" / f"prefect-{line}.txt").read_text()
            pinned = re.search(r"^prefect==(\d+\.\d+\.\d+)", pins, re.M)
            assert pinned and pinned.group(1).startswith(f"{line}."), line
            assert f"**Prefect {line}.x** on **Python {python}** ({pinned.group(1)}" in text
    assert "OLDEST=3.10" in ci and "NEWEST=3.13" in ci
