"""The test run's settings: the platform's own, in development mode, asked for explicitly.

The platform runs in development mode only when DEBUG=true is set (docs/security-deployment.md). The suite asks for
it here, before the settings are read, so `pytest` needs no environment; an explicit DEBUG in the environment wins.
pytest-django still runs every test with settings.DEBUG off, and the tests of the production rules start their own
process with an environment of their choosing. Processes a test starts with this environment inherit DEBUG=true.
"""

import os

os.environ.setdefault("DEBUG", "true")

from mobilityplus.settings import *  # noqa: E402, F403
