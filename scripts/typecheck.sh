#!/usr/bin/env bash
# mypy --strict over the service sources; tests are checked too, with untyped test
# functions allowed, one folder at a time (each has its own conftest module).
set -euo pipefail
mypy=.venv/bin/mypy
$mypy services/*/src
for dir in services/*/tests tests; do
    if compgen -G "$dir/**/*.py" >/dev/null || compgen -G "$dir/*.py" >/dev/null; then
        $mypy --allow-untyped-defs --allow-incomplete-defs --allow-untyped-calls --explicit-package-bases "$dir"
    fi
done
$mypy bench  # the benchmark: strict like the services
$mypy scripts conftest.py  # the repository scripts (make mutate, the README tables) and the root conftest
