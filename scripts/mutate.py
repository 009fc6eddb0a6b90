"""Mutation testing of the decision cores: `make mutate`.

mutmut mutates one line at a time and runs the unit tests that reach the mutated function;
a mutant that no test notices ("survived") is a decision the tests do not pin. mutmut
expects one package under `src/`, so each service gets a staging directory under
`.mutate/<service>/<modules>/` holding a copy of its `src/`, its unit tests and the test harness;
mutmut copies that again to `mutants/` and puts it first on `sys.path`.

Usage:
    .venv/bin/python scripts/mutate.py                      # every module in TARGETS
    .venv/bin/python scripts/mutate.py queue-manager/fate.py  # one module (or one service)

It prints the score per module (caught / all mutants) and every survivor, marking those
listed in scripts/mutation-equivalents/*.toml with the reason they change nothing
observable. It exits 1 when a module scores under --threshold (90%).
MUTATE_CHILDREN sets mutmut's parallel children (default: the CPU count).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGING = ROOT / ".mutate"
EQUIVALENTS = ROOT / "scripts" / "mutation-equivalents"
RUN_TIMEOUT_SECONDS = 3600

# The decision cores: service -> (package, modules). Their unit tests are the service's own.
TARGETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "queue-manager": (
        "kubemta_queue_manager",
        ("fate.py", "retry.py", "dsn.py", "dsn_fields.py", "dkim_signer.py"),
    ),
    "delivery-worker": ("kubemta_delivery_worker", ("replies.py", "destinations.py", "tls_negotiation.py")),
    "dns-resolver": ("kubemta_dns_resolver", ("mx.py", "tls_policy.py")),
    "ingress": ("kubemta_ingress", ("policy.py",)),
    "common": ("kubemta_common", ("queue_id.py",)),
}

CAUGHT = {1, 3, 36, 24, -24, 152, 255, -11, -9}  # killed, pytest internal error, timeouts, crashes
UNIT_TESTS_ONLY = "not broker and not e2e"
# Hypothesis without its example database and derandomized: every mutant meets the same examples, and an
# example that failed under one mutant is not replayed as a "kill" of the next.
STAGED_CONFTEST = """from hypothesis import settings

settings.register_profile("mutate", database=None, derandomize=True)
settings.load_profile("mutate")
"""
# Tests that read the repository's layout or run mypy over its packages, which the staging copy does not have.
REPOSITORY_TESTS: dict[str, tuple[str, ...]] = {
    "common": (
        "services/common/tests/test_common_proto_fresh.py",
        "services/common/tests/test_common_stages_typing.py",
    ),
}


@dataclass
class ModuleScore:
    module: str
    caught: int = 0
    survivors: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.caught + len(self.survivors)

    @property
    def percent(self) -> float:
        return 100.0 * self.caught / self.total if self.total else 100.0


def say(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def pytest_options() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        options: dict[str, object] = tomllib.load(file)["tool"]["pytest"]["ini_options"]
    return options


def toml_value(value: object) -> str:
    return json.dumps(value)  # the JSON forms of strings, numbers, booleans and lists are TOML too


def test_selection(service: str) -> list[str]:
    selection = [f"services/{service}/tests", "-m", UNIT_TESTS_ONLY]
    for test in REPOSITORY_TESTS.get(service, ()):
        selection += ["--ignore", test]
    return selection


def staging_pyproject(service: str, package: str, modules: tuple[str, ...]) -> str:
    pytest = dict(pytest_options())
    pytest["addopts"] = f"{pytest['addopts']} -p no:cacheprovider -p no:xdist".replace(" -ra", "")
    lines = ["[tool.pytest.ini_options]"]
    lines += [f"{key} = {toml_value(value)}" for key, value in pytest.items()]
    lines += [
        "",
        "[tool.mutmut]",
        'source_paths = ["src"]',
        f"only_mutate = {toml_value([f'src/{package}/{module}' for module in modules])}",
        'also_copy = ["services", "conftest.py"]',
        f"pytest_add_cli_args_test_selection = {toml_value(test_selection(service))}",
        "",
    ]
    return "\n".join(lines)


def stage(service: str, package: str, modules: tuple[str, ...]) -> Path:
    """A fresh `.mutate/<service>/<modules>/`: src/, the service's unit tests, the harness, a pyproject.

    One directory per selection, so that runs over different modules of a service can go on side by side.
    """
    where = STAGING / service / "+".join(Path(module).stem for module in modules)
    shutil.rmtree(where, ignore_errors=True)
    shutil.copytree(ROOT / "services" / service / "src", where / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(
        ROOT / "services" / service / "tests",
        where / "services" / service / "tests",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    (where / "tests").mkdir()
    shutil.copy2(ROOT / "tests" / "__init__.py", where / "tests" / "__init__.py")
    harness = where / "tests" / "harness"
    shutil.copytree(ROOT / "tests" / "harness", harness, ignore=shutil.ignore_patterns("__pycache__"))
    (where / "pyproject.toml").write_text(staging_pyproject(service, package, modules))
    (where / "conftest.py").write_text(STAGED_CONFTEST)
    return where


def run_mutmut(where: Path) -> None:
    mutmut = ROOT / ".venv" / "bin" / "mutmut"
    command = [str(mutmut), "run"]
    children = os.environ.get("MUTATE_CHILDREN")
    if children:
        command += ["--max-children", children]
    log = where / "mutmut.log"
    with log.open("wb") as output:
        finished = subprocess.run(
            command, cwd=where, stdout=output, stderr=subprocess.STDOUT, timeout=RUN_TIMEOUT_SECONDS, check=False
        )
    if finished.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise SystemExit(f"mutmut failed in {where} (exit {finished.returncode}); the end of {log}:\n{tail}")


def scores(where: Path, package: str, modules: tuple[str, ...]) -> list[ModuleScore]:
    results = []
    for module in modules:
        meta = where / "mutants" / "src" / package / f"{module}.meta"
        exit_codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
        score = ModuleScore(f"{package}/{module}")
        for name, exit_code in sorted(exit_codes.items(), key=lambda item: mutant_order(item[0])):
            if exit_code in CAUGHT:
                score.caught += 1
            else:
                score.survivors.append(name)
        results.append(score)
    return results


def mutant_order(name: str) -> tuple[str, int]:
    function, _, number = name.rpartition("__mutmut_")
    return function, int(number) if number.isdigit() else 0


def mutant_diff(where: Path, name: str) -> str:
    mutmut = ROOT / ".venv" / "bin" / "mutmut"
    shown = subprocess.run(
        [str(mutmut), "show", name], cwd=where, capture_output=True, text=True, timeout=120, check=False
    )
    lines = [
        line for line in shown.stdout.splitlines() if line.startswith(("-", "+")) and line[:3] not in {"---", "+++"}
    ]
    return "\n".join(f"        {line}" for line in lines)


def selected(arguments: list[str]) -> dict[str, tuple[str, tuple[str, ...]]]:
    if not arguments:
        return TARGETS
    chosen: dict[str, tuple[str, tuple[str, ...]]] = {}
    for argument in arguments:
        service, _, module = argument.partition("/")
        if service not in TARGETS:
            raise SystemExit(f"unknown service {service!r}: one of {', '.join(TARGETS)}")
        package, modules = TARGETS[service]
        if module and module not in modules:
            raise SystemExit(f"{module!r} is not a decision core of {service}: one of {', '.join(modules)}")
        picked = (module,) if module else modules
        earlier = chosen.get(service, (package, ()))[1]
        chosen[service] = (package, tuple(dict.fromkeys(earlier + picked)))
    return chosen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help="service or service/module.py (default: all)")
    parser.add_argument("--threshold", type=float, default=90.0, help="lowest passing score per module, in %%")
    parser.add_argument("--no-diff", action="store_true", help="list survivors by name only")
    arguments = parser.parse_args()
    equivalents: dict[str, str] = {}
    for listing in sorted(EQUIVALENTS.glob("*.toml")):
        with listing.open("rb") as file:
            equivalents.update(tomllib.load(file))

    table: list[ModuleScore] = []
    for service, (package, modules) in selected(arguments.targets).items():
        say(f"mutating {service}: {', '.join(modules)}")
        where = stage(service, package, modules)
        run_mutmut(where)
        for score in scores(where, package, modules):
            table.append(score)
            for name in score.survivors:
                reason = equivalents.get(name)
                label = f"equivalent: {reason}" if reason else "SURVIVED (not known to be equivalent)"
                say(f"    {name}  {label}")
                if not arguments.no_diff:
                    say(mutant_diff(where, name))

    say()
    say(f"{'module':<44} {'mutants':>7} {'caught':>7} {'score':>7}")
    failing = []
    for score in table:
        say(f"{score.module:<44} {score.total:>7} {score.caught:>7} {score.percent:>6.1f}%")
        if score.percent < arguments.threshold:
            failing.append(score.module)
    if failing:
        say(f"under {arguments.threshold:.0f}%: {', '.join(failing)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
