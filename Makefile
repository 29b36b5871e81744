# cyclelab: two commands for a new user, `make demo` and `make test`; `make tensorboard` to look.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUNS ?= runs
PORT ?= 6006

.PHONY: demo test lint venv clean tensorboard

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,ray]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

# TensorBoard over every run in $(RUNS), on this machine only (loopback); Ctrl-C stops it.
tensorboard: $(STAMP)
	@mkdir -p $(RUNS)
	@echo "TensorBoard over $(RUNS)/ at http://127.0.0.1:$(PORT)/ (Ctrl-C stops it)"
	@$(BIN)/tensorboard --logdir $(RUNS) --host 127.0.0.1 --port $(PORT)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) runs .pytest_cache
