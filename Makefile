# The two commands of the README: `make arena` and `make test`. Each creates the virtual
# environment if needed, installs the pinned torch first (an unpinned torch would pull a multi-GB
# CUDA build; where no CPU wheel is on disk, TORCH_PIP_ARGS='--index-url
# https://download.pytorch.org/whl/cpu' selects the CPU build), then the package and its extras,
# and the Debian packages the arena uses (scripts/system_deps.sh).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
TORCH_PIP_ARGS ?=

.PHONY: arena demo test venv bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_PIP_ARGS) torch==$(TORCH_VERSION)

venv: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,demo,arena]'

arena: venv
	scripts/system_deps.sh
	$(BIN)/optarena arena run --suite quick --out runs/arena --jobs 2

demo: venv
	$(BIN)/optarena demo

test: venv
	scripts/system_deps.sh --with-postgres
	$(BIN)/python -m pytest -q

bench: venv
	$(BIN)/python benchmarks/step_speed.py --json runs/step_speed.json
