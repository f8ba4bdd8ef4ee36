"""The e2e tier runs against the same real influxd as the integration tier."""

from tests.integration.conftest import influxd  # noqa: F401  (a fixture)
