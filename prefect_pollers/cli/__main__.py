"""``python -m prefect_pollers.cli``: the ``prefect-pollers`` command."""

import sys

from prefect_pollers.cli import main

sys.exit(main())
