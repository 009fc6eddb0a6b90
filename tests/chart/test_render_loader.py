"""`render` parses a release with libyaml's safe loader (`SAFE_LOADER`): the objects are those `yaml.safe_load_all`
gives for the same manifest, so the chart tests read what `helm template` prints either way."""

import yaml  # type: ignore[import-untyped]

from tests.chart.render import SAFE_LOADER, install, render


def test_the_rendered_objects_are_those_of_the_pure_python_safe_loader() -> None:
    manifest = install({})["manifest"]
    assert render({}) == [doc for doc in yaml.safe_load_all(manifest) if doc]


def test_the_loader_is_libyamls_where_pyyaml_has_it() -> None:
    assert yaml.__with_libyaml__  # PyYAML's wheels carry libyaml: the speed this module is for
    assert SAFE_LOADER is yaml.CSafeLoader
