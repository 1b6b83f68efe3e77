# The two commands of the README: `make run` and `make test`. Everything else is a helper.
# uv is installed from PyPI on first use; Python 3.11+ must be on PATH as python3.
PYTHON ?= python3
UV := $(PYTHON) -m uv
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(PYTHON)

.PHONY: run test install lint typecheck pytest openapi bench bench-quick clean

run: install ## start embedded Postgres (unless DATABASE_URL is set), migrate, serve on 127.0.0.1:8000
	.venv/bin/points-ledger serve

test: install lint typecheck pytest ## the whole test suite: lint, types, tests

install:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv || $(PYTHON) -m pip install --quiet --user uv
	$(UV) sync --frozen --all-groups --quiet

lint:
	.venv/bin/ruff check app tests migrations bench

typecheck:
	.venv/bin/mypy app

pytest:
	.venv/bin/pytest -n 2 -q

bench: install ## the full benchmark (~15 minutes): bench/results/<run>.json and .png, a table on stdout
	.venv/bin/python -m bench.run

bench-quick: install ## the benchmark at tiny scale, to prove it works (numbers mean nothing)
	.venv/bin/python -m bench.run --quick

openapi: install ## regenerate openapi/openapi.json
	.venv/bin/points-ledger openapi

clean: ## remove the virtualenv and the embedded database
	rm -rf .venv .data
