"""`make bench` records how the services' interpreter was compiled: the same Python code costs noticeably more CPU
on a build without profile-guided and link-time optimisation (pyenv's default) than on the official images' build."""

import sysconfig

import pytest

from bench import machine
from bench.markdown import render
from bench.report import summarise
from tests.harness.bench_documents import MACHINE, result_document


@pytest.mark.parametrize(
    ("arguments", "build"),
    [
        ("'--prefix=/x' '--enable-optimizations' '--with-lto' '--enable-shared'", "PGO+LTO"),
        ("'--enable-optimizations'", "PGO"),
        ("'--with-lto=full'", "LTO"),
        ("'--prefix=/root/.pyenv/versions/3.12.1' '--enable-shared'", "no PGO, no LTO"),
        (None, "no PGO, no LTO"),
    ],
)
def test_the_build_is_read_from_the_configure_arguments(
    monkeypatch: pytest.MonkeyPatch, arguments: str | None, build: str
) -> None:
    monkeypatch.setattr(sysconfig, "get_config_var", lambda name: arguments)
    assert machine.python_build() == build


def test_the_report_names_the_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(MACHINE, "python_build", "PGO+LTO")
    document = result_document(summarise([]), sizes=[1024], systems=["kubemta"])
    assert "Python 3.12 (PGO+LTO build)." in render(document)


def test_a_result_file_from_before_the_build_was_recorded_still_renders() -> None:
    document = result_document(summarise([]), sizes=[1024], systems=["kubemta"])
    assert "Python 3.12. " in render(document)
