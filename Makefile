# bakery's developer commands. Quick start: `make demo` then `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
BUILD ?= build
PYTEST_ARGS ?=

.PHONY: lock demo install test test-e2e test-cloud test-cloud-bake test-cloud-cluster test-cloud-raw test-cloud-shapes test-cluster-faults test-docker-course test-slow lint typecheck bench bench-e2e bench-class golden clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# `make demo` installs bakery alone (what an instructor runs); `make test` adds the test and dev
# tools. Editable installs: the templates are read from the source tree (bakery/templates.py).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(VENV)/.installed $@

install: $(VENV)/.installed

# The main job on the bundled example: render every stage into build/ and check it.
demo: install
	mkdir -p $(BUILD)
	cp examples/workshop.yaml $(BUILD)/workshop.yaml
	$(BIN)/bakery render $(BUILD)/workshop.yaml -o $(BUILD)/user-data
	$(BIN)/bakery render $(BUILD)/workshop.yaml --stage bake -o $(BUILD)/user-data.bake
	$(BIN)/bakery render $(BUILD)/workshop.yaml --stage boot -o $(BUILD)/user-data.boot
	$(BIN)/bakery validate $(BUILD)/workshop.yaml
	@echo
	@echo "Rendered $(BUILD)/user-data (full), user-data.bake and user-data.boot;"
	@echo "trainee passwords: $(BUILD)/workshop.credentials.csv (bakery credentials $(BUILD)/workshop.yaml)"

test: $(VENV)/.deps
	$(BIN)/pytest -n auto -m "not e2e and not slow and not testcloud" $(PYTEST_ARGS)

# Boots real VMs under qemu (root: chroot bake, loop devices); ~47 min under TCG (CI figure).
test-e2e: $(VENV)/.deps
	$(BIN)/pytest -m "e2e and not slow" -s $(PYTEST_ARGS)

# Needs the OpenStack of ../shared/testcloud (sudo ../shared/testcloud/up.sh).
test-cloud: $(VENV)/.deps
	$(BIN)/pytest -m "testcloud and not slow" -s $(PYTEST_ARGS)

# A swarm cluster on the test cloud (manager + 1 worker from a chroot-baked golden image, a
# trainee's server on the worker, destroy leaves nothing): root, long under nested TCG, on demand.
# The cluster e2e with two workers, test_8 (the manager reboots) and test_9 (a worker lost: its
# trainee starts again on the other): three VMs under TCG, ~30 min on a 2-core host; not in CI.
test-cluster-faults: $(VENV)/.deps
	BAKERY_E2E_CLUSTER_WORKERS=2 $(BIN)/pytest -m e2e -s tests/e2e/test_cluster.py $(PYTEST_ARGS)

# Issue 29 on one docker VM: `bakery update` pushes course files from a folder into a running
# trainee's container (CI's docker workshop takes its course from git). One more bake and boot.
test-docker-course: $(VENV)/.deps
	$(BIN)/pytest -m "e2e and slow" -s tests/e2e/test_docker_course.py $(PYTEST_ARGS)

test-cloud-cluster: $(VENV)/.deps
	$(BIN)/pytest -m "testcloud and slow" -s tests/testcloud/test_cloud_cluster.py $(PYTEST_ARGS)

# Issue 30: the test cloud's Glance set to take raw images only (as a Ceph-backed site), the
# golden image converted by `image upload`, launched and logged into; Glance's setting restored.
test-cloud-raw: $(VENV)/.deps
	$(BIN)/pytest -m "testcloud and slow" -s tests/testcloud/test_golden_hub.py $(PYTEST_ARGS)

# Issue 30: the golden image on cloud shapes unlike devstack's, each through an application
# credential: a provider network without router, floating IP, DHCP or metadata service (config
# drive; tests/testcloud/shapes/provider-net.sh adds it to the test cloud). Root; on demand.
test-cloud-shapes: $(VENV)/.deps
	$(BIN)/pytest -m "testcloud and slow" -s tests/testcloud/test_shapes.py $(PYTEST_ARGS)

# The real bakes on the test cloud (openstacksdk builder, Packer's openstack source), each launched
# and logged into, and the openstacksdk builder's seal and snapshot on a cut-down bake: hours under
# nested TCG, not in CI.
test-cloud-bake: $(VENV)/.deps
	$(BIN)/pytest -m slow -s tests/testcloud/test_bake_sdk.py tests/testcloud/test_cloud_bake.py $(PYTEST_ARGS)

test-slow: $(VENV)/.deps
	BAKERY_E2E_CLUSTER_WORKERS=2 $(BIN)/pytest -m slow -s $(PYTEST_ARGS)

lint: $(VENV)/.deps
	$(BIN)/ruff check bakery tests
	$(BIN)/ruff format --check bakery tests

typecheck: $(VENV)/.deps
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/render_bench.py

# Phase timings of the end-to-end run (image build, bake, boot to login page, login to kernel
# answer), written to $(BUILD)/e2e-timings.json.
bench-e2e: $(VENV)/.deps
	mkdir -p $(BUILD)
	BAKERY_E2E_TIMINGS=$(abspath $(BUILD))/e2e-timings.json $(BIN)/pytest -m "e2e and not slow" -q
	cat $(BUILD)/e2e-timings.json

# N trainees (BENCH_N, default 10) log in, spawn and run a cell at the same moment; a table and
# $(BUILD)/class-bench-SPAWNER-N[-warm].json. Boots the e2e golden VM (root, ~15 min under TCG;
# memory as `bakery size` says unless --memory) unless BENCH_ARGS has --url https://HUB
# --credentials SHEET [--config workshop.yaml --ssh USER@HOST]. BENCH_ARGS: --warm (warm: boot,
# the class comes once every server is ready), --compare-scratch (golden vs stock-image boot).
BENCH_N ?= 10
BENCH_ARGS ?=
bench-class: $(VENV)/.deps
	$(BIN)/python bench/class_bench.py -n $(BENCH_N) $(BENCH_ARGS)

golden: $(VENV)/.deps
	BAKERY_REGEN_GOLDEN=1 $(BIN)/pytest -q tests/test_golden.py
	git diff --stat tests/golden

# The locks bakery ships for the hub's default environments (bakery/locks/, from
# bakery/versions.py), resolved again against PyPI; then the examples' and the e2e workshops'.
# After bumping a version: make lock, review `git diff`, make golden.
lock: $(VENV)/.deps
	$(BIN)/python -c "from bakery.bake.lock import refresh_shipped; refresh_shipped()"
	for f in examples/*.lock.json; do $(BIN)/bakery lock "$${f%.lock.json}.yaml"; done
	$(BIN)/python tests/e2e/e2e_harness.py --lock
	git diff --stat bakery/locks examples tests/e2e

clean:
	rm -rf $(BUILD) dist .pytest_cache .mypy_cache .ruff_cache .hypothesis
