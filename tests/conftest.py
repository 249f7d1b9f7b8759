"""Shared test setup: quiet, isolated Prefect settings before Prefect is imported."""

import os
import tempfile

_home = tempfile.mkdtemp(prefix="prefect-pollers-test-home-")
os.environ.update(
    {
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_LOGGING_LEVEL": "CRITICAL",
        "PREFECT_HOME": _home,
        "PREFECT_LOCAL_STORAGE_PATH": os.path.join(_home, "storage"),
    }
)
os.environ.pop("PREFECT_API_URL", None)
