# The two commands of the README. Each creates the virtual environment if needed, installs the
# pinned torch first (an unpinned torch would pull a multi-GB CUDA build; where no CPU wheel is on
# disk, TORCH_PIP_ARGS='--index-url https://download.pytorch.org/whl/cpu' selects the CPU build),
# then the package.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
TORCH_PIP_ARGS ?=

.PHONY: demo test venv bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_PIP_ARGS) torch==$(TORCH_VERSION)

venv: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,demo]'

demo: venv
	$(BIN)/optarena demo

test: venv
	$(BIN)/python -m pytest -q

bench: venv
	$(BIN)/python benchmarks/step_speed.py --json runs/step_speed.json
