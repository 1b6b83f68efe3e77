# The two commands of the README: `make run` and `make test`. Everything else is a helper.
#
# Python 3.11+ must be on PATH as python3 (or say which: `make run PYTHON=/usr/bin/python3.12`). It may be a
# stock Debian/Ubuntu system Python, "externally managed" (PEP 668): nothing is installed into it. uv is the
# one on PATH if there is one, else a pinned uv bootstrapped into .tools/, a venv made by `python3 -m venv`
# (on Debian/Ubuntu that needs the python3-venv package). uv then builds .venv from uv.lock.
PYTHON ?= python3
UV_VERSION := 0.13.9
UV ?= $(or $(shell command -v uv 2>/dev/null),.tools/bin/uv)
CHROMIUM := /usr/bin/chromium
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(PYTHON)

.PHONY: run test install browser lint typecheck pytest openapi bench bench-quick clean

run: install ## start embedded Postgres (unless DATABASE_URL is set), migrate, serve on 127.0.0.1:8000
	.venv/bin/points-ledger serve

test: install browser lint typecheck pytest ## the whole test suite: lint, types, tests

install: $(if $(filter .tools/bin/uv,$(UV)),.tools/bin/uv)
	$(UV) sync --frozen --all-groups --all-extras --quiet

.tools/bin/uv:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || \
	    { echo "points-ledger needs Python >= 3.11 as $(PYTHON) (set PYTHON=/path/to/python3.11+)" >&2; exit 1; }
	@$(PYTHON) -m venv .tools 2>/dev/null || { rm -rf .tools; \
	    echo "'$(PYTHON) -m venv' failed. On Debian/Ubuntu install the venv module: sudo apt-get install python3-venv" >&2; \
	    exit 1; }
	.tools/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# Debian's Chromium for the browser tests of /docs and /redoc (Playwright drives it; no browser download).
# Installed with apt-get when it is missing and we are root; otherwise those tests say how and skip (in CI,
# CI=true, they fail instead).
browser:
	@test -x $(CHROMIUM) || { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium (apt-get)"; apt-get update -qq >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	    else echo "note: $(CHROMIUM) is missing (apt-get install chromium): browser tests will skip"; fi; }

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

clean: ## remove what install, the tests, the tools and the README's walkthrough leave behind
	rm -rf .venv .tools .data .pytest_cache .mypy_cache .ruff_cache .hypothesis .schemathesis dist build
	rm -f program.json order-7001.json
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
