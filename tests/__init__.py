"""authserver's test suite.

Its processes start without the caller's own server settings: an ``AUTHSERVER_*`` or
``DATABASE_URL`` exported in a developer's shell would reach every server and command the tests
start, and ``PROMETHEUS_MULTIPROC_DIR`` would send the test process's own metrics into a folder
other runs may share. Removed here, before anything imports authserver or prometheus-client.
``AUTHSERVER_TEST_*`` are the suite's own settings and stay.
"""

import os

for _name in list(os.environ):
    if (
        _name.startswith(("AUTHSERVER_", "GUNICORN_")) and not _name.startswith("AUTHSERVER_TEST_")
    ) or _name in ("DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR"):
        del os.environ[_name]
