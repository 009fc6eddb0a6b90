# kubemta developer commands. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
export UV_PYTHON_DOWNLOADS := never

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  %-18s %s\n", $$1, $$2}'

$(UV):
	@scripts/bootstrap-uv.sh $(TOOLS)

.PHONY: system-deps
system-deps: ## install the Debian packages the tests and `make run` use (nsd, swaks, rabbitmq-server, postfix)
	@scripts/system-deps.sh

# Bytecode is compiled once here (as the image's Dockerfile does), not by every process: a shell that sets
# PYTHONDONTWRITEBYTECODE (CI does) would otherwise compile every import from source in every service the tests
# start, about 1.3 s of CPU per process (measured: an ingress imports in 1.1 s instead of 2.8 s).
.PHONY: sync
sync: $(UV) ## create .venv with every workspace member and the dev tools
	UV_COMPILE_BYTECODE=1 $(UV) sync --all-packages --frozen
	$(PY) -m compileall -q services/*/src bench tests scripts > /dev/null

.PHONY: proto
proto: sync ## regenerate Python from proto/ (commit the result)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m grpc_tools.protoc -I proto --python_out=services/common/src --mypy_out=services/common/src proto/kubemta/v1/*.proto

.PHONY: fmt
fmt: sync ## format and autofix
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

.PHONY: lint
lint: sync ## ruff and mypy (strict)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	scripts/typecheck.sh

.PHONY: typecheck
typecheck: sync ## mypy only
	scripts/typecheck.sh

.PHONY: test
test: system-deps sync lint ## everything: lint, unit, integration and end-to-end tests (three files at a time: most tests wait on processes and sockets)
	$(VENV)/bin/pytest -p no:cacheprovider -n 3 --dist loadfile --no-loadscope-reorder

# Newer RabbitMQ releases than this machine's Debian ships, each from a minimal Debian system of its own
# (scripts/rabbitmq-root.sh: debootstrap, needs root and deb.debian.org, ~400 MB per release, made once).
RABBITMQ_SUITES ?= trixie sid
RABBITMQ_ROOTS ?= /var/cache/kubemta/rabbitmq
PYTEST_ARGS ?=

.PHONY: test-rabbitmq
test-rabbitmq: system-deps sync ## the suite against RabbitMQ 4.0 (Debian trixie) and 4.3+ (sid), private nodes run by chroot (RABBITMQ_SUITES, PYTEST_ARGS); not in `make test`
	@for suite in $(RABBITMQ_SUITES); do \
		scripts/rabbitmq-root.sh $$suite $(RABBITMQ_ROOTS)/$$suite || exit 1; \
		KUBEMTA_TEST_RABBITMQ_ROOT=$(RABBITMQ_ROOTS)/$$suite $(VENV)/bin/pytest -p no:cacheprovider -n 3 \
			--dist loadfile --no-loadscope-reorder $(PYTEST_ARGS) || exit 1; \
	done

.PHONY: test-unit
test-unit: system-deps sync ## unit tests only (no broker; installs the tools they drive: swaks, promtool, nsd)
	$(VENV)/bin/pytest -p no:cacheprovider -m "not broker and not e2e"

.PHONY: mutate
mutate: system-deps sync ## mutation testing of the decision cores (mutmut): score per module and every survivor; not in `make test`
	$(UV) sync --all-packages --frozen --group mutate
	$(PY) scripts/mutate.py $(MUTATE_TARGETS)

.PHONY: rabbitmq
rabbitmq: system-deps ## make sure a RabbitMQ answers at 127.0.0.1:5672 (starts the local one when not)
	@scripts/ensure-rabbitmq.sh

.PHONY: run
run: system-deps sync rabbitmq ## start the services locally (SMTP on 127.0.0.1:2525, tracker API on 127.0.0.1:8025)
	$(PY) scripts/local_env.py .run/local.env
	$(VENV)/bin/honcho -e .run/local.env -f Procfile start

.PHONY: run-one
run-one: sync ## run one service: make run-one SERVICE=ingress
	$(VENV)/bin/kubemta-$(SERVICE)

.PHONY: chart-lint
chart-lint: sync ## helm lint (real Helm engine), render, schema and promtool checks of charts/kubemta
	$(VENV)/bin/pytest -p no:cacheprovider tests/chart -m "not e2e" --ignore=tests/chart/test_image_install.py

.PHONY: chart-docs
chart-docs: sync ## regenerate charts/kubemta/README.md from values.yaml
	$(PY) scripts/chart_docs.py

.PHONY: image-check
image-check: sync ## the Dockerfile's locked, non-editable install into a fresh venv; every console script starts
	$(VENV)/bin/pytest -p no:cacheprovider tests/chart/test_image_install.py

.PHONY: chaos
chaos: system-deps sync ## 10,000 messages while every service is killed (kill -9) at random and the broker restarts twice; lost must be 0 (CHAOS_QUICK=1: 250, as in `make test`; CHAOS_ARGS="--each")
	$(PY) -m bench.chaos $(if $(filter 1 true yes on,$(CHAOS_QUICK)),--quick) $(CHAOS_ARGS)

.PHONY: bench
bench: system-deps sync rabbitmq ## kubemta vs Postfix vs smtp-sink, then each stage alone and the broker's limit (docs/scale.md), and where the broker's CPU goes, on this machine, the services on a PGO+LTO CPython as in the image (BENCH_PYTHON=venv: on .venv's; BENCH_QUICK=1: quick); not in `make test`
	set -e; py=$$(UV=$(UV) scripts/bench-python.sh); \
	$$py -m bench; \
	$$py -m bench.stages; \
	$$py -m bench.broker_profile; \
	$$py -m bench.dkim_signing; \
	$$py -m bench.memory_fanout; \
	$$py -m bench.api_loop_lag
