"""scripts/mutate.py, the driver of `make mutate`: what it stages for mutmut and how it scores."""

import importlib.util
import json
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mutate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kubemta_mutate_script", ROOT / "scripts" / "mutate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_every_target_module_exists(mutate: ModuleType) -> None:
    for service, (package, modules) in mutate.TARGETS.items():
        for module in modules:
            assert (ROOT / "services" / service / "src" / package / module).is_file(), (service, module)


def test_the_staged_pyproject_mutates_only_the_selection_with_the_service_unit_tests(mutate: ModuleType) -> None:
    staged = tomllib.loads(mutate.staging_pyproject("queue-manager", "kubemta_queue_manager", ("fate.py", "dsn.py")))
    mutmut = staged["tool"]["mutmut"]
    assert mutmut["source_paths"] == ["src"]
    assert mutmut["only_mutate"] == ["src/kubemta_queue_manager/fate.py", "src/kubemta_queue_manager/dsn.py"]
    assert mutmut["pytest_add_cli_args_test_selection"] == [
        "services/queue-manager/tests",
        "-m",
        "not broker and not e2e",
    ]
    pytest_options = staged["tool"]["pytest"]["ini_options"]
    assert pytest_options["asyncio_mode"] == "auto" and pytest_options["filterwarnings"] == ["error"]
    assert "-p no:xdist" in pytest_options["addopts"]
    assert "conftest.py" in mutmut["also_copy"], "the hypothesis profile without a database reaches the mutants"


def test_tests_that_read_the_repository_layout_are_left_out_of_the_staged_selection(mutate: ModuleType) -> None:
    staged = tomllib.loads(mutate.staging_pyproject("common", "kubemta_common", ("queue_id.py",)))
    selection = staged["tool"]["mutmut"]["pytest_add_cli_args_test_selection"]
    ignored = [selection[index + 1] for index, argument in enumerate(selection) if argument == "--ignore"]
    assert "services/common/tests/test_common_proto_fresh.py" in ignored
    assert all((ROOT / path).is_file() for path in ignored), "a test left out that no longer exists"


def test_selection_by_service_or_module_and_refusals(mutate: ModuleType) -> None:
    assert mutate.selected([]) == mutate.TARGETS
    assert mutate.selected(["queue-manager/fate.py", "queue-manager/retry.py"]) == {
        "queue-manager": ("kubemta_queue_manager", ("fate.py", "retry.py"))
    }
    assert mutate.selected(["ingress"]) == {"ingress": mutate.TARGETS["ingress"]}
    with pytest.raises(SystemExit, match="unknown service"):
        mutate.selected(["postfix"])
    with pytest.raises(SystemExit, match="not a decision core"):
        mutate.selected(["queue-manager/handlers.py"])


def test_scores_count_timeouts_and_crashes_as_caught_and_no_tests_as_survived(
    mutate: ModuleType, tmp_path: Path
) -> None:
    meta = tmp_path / "mutants" / "src" / "pkg" / "m.py.meta"
    meta.parent.mkdir(parents=True)
    codes: dict[str, int | None] = {"pkg.m.x_f__mutmut_1": 1, "pkg.m.x_f__mutmut_2": 0, "pkg.m.x_f__mutmut_10": 36}
    codes |= {"pkg.m.x_f__mutmut_3": 33, "pkg.m.x_f__mutmut_4": -11, "pkg.m.x_f__mutmut_5": None}
    meta.write_text(json.dumps({"exit_code_by_key": codes}))
    [score] = mutate.scores(tmp_path, "pkg", ("m.py",))
    assert (score.caught, score.total) == (3, 6)
    assert score.survivors == ["pkg.m.x_f__mutmut_2", "pkg.m.x_f__mutmut_3", "pkg.m.x_f__mutmut_5"]
    assert score.percent == 50.0


def test_every_listed_equivalent_mutant_is_in_the_readme(mutate: ModuleType) -> None:
    readme = (ROOT / "README.md").read_text()
    for listing in sorted(mutate.EQUIVALENTS.glob("*.toml")):
        with listing.open("rb") as file:
            for name in tomllib.load(file):
                assert f"`{name}`" in readme, f"{name} ({listing.name}) is not listed in the README"
