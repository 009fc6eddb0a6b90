"""Plugins for every test of the repository (services/*/tests and tests/)."""

pytest_plugins = ("tests.harness.no_skips", "tests.harness.broker_fixtures")
