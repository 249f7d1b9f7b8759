"""``prefect-pollers webhooks serve`` refuses what it cannot serve, with a clear message."""

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from prefect_pollers import ExonaCredentials
from prefect_pollers.cli import main


def test_needs_a_prefect_api(capsys):
    with temporary_settings(updates={PREFECT_API_URL: None}):
        assert main(["webhooks", "serve", "--block", "apixo-credentials/x"]) == 2
    assert "PREFECT_API_URL" in capsys.readouterr().err


@pytest.mark.usefixtures("prefect_harness")
def test_names_a_missing_block_and_a_block_without_callbacks(capsys):
    assert main(["webhooks", "serve", "--block", "apixo-credentials/nowhere"]) == 2
    assert "cannot load block 'apixo-credentials/nowhere'" in capsys.readouterr().err
    ExonaCredentials(api_key="k").save("cli-exona", overwrite=True)
    assert main(["webhooks", "serve", "--block", "exona-credentials/cli-exona"]) == 2
    assert "exona: callbacks are off" in capsys.readouterr().err
