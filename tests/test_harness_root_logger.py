"""The root conftest gives every test the root logger's level as it was: a test that raised it (as starting a
service in-process does) does not change what the next test in the same worker captures."""

import logging

LEVEL_AT_COLLECTION = logging.getLogger().level
"""Read when pytest imports this file, before any test ran."""


def test_a_test_may_raise_the_root_logger_to_info() -> None:
    logging.getLogger().setLevel(logging.INFO)  # what Service.start's setup_logging does
    assert logging.getLogger().isEnabledFor(logging.INFO)


def test_the_next_test_finds_the_level_as_it_was() -> None:
    assert logging.getLogger().level == LEVEL_AT_COLLECTION
