# magma-bench developer entry points. Everything runs inside $(VENV).
#   make demo | make test | make test-all | make demo-optimizer | make lint | make bench | make readme | make clean
#   make wheelhouse (wheels for an offline image build) | make test-docker (the real stack)
# Override the torch build, e.g.:  make test TORCH="torch==2.14.1"  (or a URL / wheel path)

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0

BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed
SPEC  := $(VENV)/.install-spec
# Top-level packages present now. The editable install maps packages when it is made, so a
# package that gains its __init__.py later (e.g. magma/) needs a reinstall to be importable.
PKGS  := $(sort $(wildcard */__init__.py))

.PHONY: install lint test test-all test-docker wheelhouse demo demo-optimizer bench readme clean FORCE

install: $(STAMP)

# Records TORCH and the package list; the file is rewritten (and so the stamp goes stale)
# only when one of them changes.
$(SPEC): FORCE
	@mkdir -p $(VENV)
	@printf '%s\n' '$(TORCH)' '$(PKGS)' | cmp -s - $@ || printf '%s\n' '$(TORCH)' '$(PKGS)' > $@

$(STAMP): pyproject.toml $(SPEC)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install "$(TORCH)"
	@# The distribution was called magma-bench before; an old install of it would keep a
	@# stale copy of the metadata and own the magma-bench command.
	$(BIN)/python -m pip uninstall --yes --quiet magma-bench
	$(BIN)/python -m pip install -e ".[service,dev]"
	@touch $@

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# pytest exits 5 when it collected no tests; we always expect tests, so say so loudly.
define run_pytest
	$(BIN)/python -m pytest $(1); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests (exit 5)" >&2; fi; \
	exit $$rc
endef

test: install lint
	$(call run_pytest,)

# Every test but the docker ones, which need a daemon: make test-docker.
test-all: install lint
	$(call run_pytest,-m "not docker")

# Wheels for `docker compose build` with PIP_NO_INDEX=1 (no index reached in the build):
# pip, setuptools and wheel, torch (TORCH), and the image's requirements (docker/requirements.py).
# Remade when the requirements or TORCH change (the stamp).
wheelhouse: wheelhouse/.complete

wheelhouse/.complete: pyproject.toml docker/requirements.py $(SPEC) | install
	$(BIN)/python docker/requirements.py pyproject.toml > wheelhouse/requirements.txt
	$(BIN)/python -m pip wheel --quiet --wheel-dir wheelhouse pip setuptools wheel "$(TORCH)" \
		-r wheelhouse/requirements.txt
	@touch $@

# The docker-compose stack for real (tests/test_docker.py): a Docker daemon on DOCKER_HOST,
# started by docker/local/start-docker.sh when none answers there.
DOCKER_HOST ?= unix:///run/magma-bench-docker/docker.sock
test-docker: export DOCKER_HOST := $(DOCKER_HOST)
test-docker: install wheelhouse
	bash docker/local/start-docker.sh
	$(call run_pytest,-m docker -s tests/test_docker.py)

demo: install
	BIN=$(BIN) bash examples/service_demo.sh

demo-optimizer: install
	$(BIN)/python examples/optimizer_demo.py

bench: install
	$(BIN)/python benchmarks/optimizer_step.py

# The README's "Claims" table (from the claims registry) and its recorded suite run.
readme: install
	$(BIN)/python -m studies.analysis.claims_report README.md --run benchmarks/results/claims-suite.json \
		benchmarks/results/implementations.json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

FORCE:
