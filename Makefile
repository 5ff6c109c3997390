# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# `make run` installs what running needs; `make test` the whole tool chain on top.
RUN_STAMP  := $(VENV)/.run-installed
TEST_STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest check lowest-deps newest-deps bench bench-instructions clean image-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[fast,demo,agent]'
	touch $(RUN_STAMP)

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[fast,demo,agent,test,dev]'
	touch $(RUN_STAMP) $(TEST_STAMP)

run: $(RUN_STAMP)
	./scripts/run.sh

check: $(RUN_STAMP)
	$(BIN)/chatkit-gateway check --config gateway.yaml $(if $(OPENAI_API_KEY),,--stub-upstream)

lint: $(TEST_STAMP)
	$(BIN)/shellcheck scripts/*.sh .ci/run
	$(BIN)/ruff check gateway tests bench demo examples
	$(BIN)/ruff format --check gateway tests bench demo examples

typecheck: $(TEST_STAMP)
	$(BIN)/mypy

pytest: $(TEST_STAMP)
	./scripts/system-deps.sh
	$(BIN)/pytest

# The lowest versions pyproject.toml allows, in a scratch venv: the unit tests must pass there.
lowest-deps: $(TEST_STAMP)
	./scripts/dependency-bounds.sh lowest

# The newest releases it allows (no upper bounds), the same way: the unit tests must pass.
newest-deps: $(TEST_STAMP)
	./scripts/dependency-bounds.sh newest

test: lint typecheck lowest-deps newest-deps pytest

# The real Dockerfile built with buildah on a stand-in base, then run (scripts/image-test.sh).
image-test: $(TEST_STAMP)
	./scripts/image-test.sh

bench: $(TEST_STAMP)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python -m bench

bench-instructions: $(TEST_STAMP)
	command -v valgrind >/dev/null || (apt-get update -qq && apt-get install -y -qq valgrind)
	$(BIN)/python -m bench.instructions

clean:
	rm -rf $(VENV) .venv-lowest .venv-newest .pytest_cache .mypy_cache .ruff_cache
