# Two commands for a new user:  `make lab` (set up + open JupyterLab), `make test` (all tests).
# Both create (or reuse) the virtual environment .venv and install the project into it.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup lab test unit notebooks results benchmark clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(STAMP)

# (as root, e.g. in a container, JupyterLab refuses to start without --allow-root)
lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root)

test: unit notebooks

unit: $(STAMP)
	$(BIN)/python -m pytest tests -q

# Every notebook executed top to bottom under the small `smoke` budget.
notebooks: $(STAMP)
	SSL_PROFILE=smoke $(BIN)/python -m pytest --nbval-lax notebooks/ -q -p no:cacheprovider

# Rebuild the README's results table from results/*.json.
results: $(STAMP)
	$(BIN)/python -m ssl_core.results

benchmark: $(STAMP)
	$(BIN)/python benchmarks/augment_throughput.py
	$(BIN)/python benchmarks/data_load.py --fresh

clean:
	rm -rf checkpoints results/smoke .pytest_cache
