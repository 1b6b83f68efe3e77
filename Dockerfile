# Multi-stage image: dependencies resolved from uv.lock in a build stage, a slim non-root runtime.
# The container runs `points-ledger serve` against DATABASE_URL (required: Postgres 15 or newer). The embedded
# Postgres of development machines is an optional extra (`embedded`) and is not installed here: without
# DATABASE_URL the container exits at once with a message saying what to set.
#
#   docker build -t points-ledger .
#   docker run -e DATABASE_URL=postgresql://user:password@db:5432/points_ledger -p 8000:8000 points-ledger
#
# Every replica migrates on start (PL_MIGRATE_ON_START=true) under a Postgres advisory lock: replicas starting
# together migrate once, the others wait and find nothing to do.
FROM python:3.11-slim-bookworm AS build
ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /srv
ENV UV_PYTHON_DOWNLOADS=never UV_PYTHON=/usr/local/bin/python3 UV_LINK_MODE=copy UV_COMPILE_BYTECODE=1
COPY pyproject.toml uv.lock README.md ./
# no dev group and no extras: neither the test tools nor the embedded Postgres
RUN uv sync --frozen --no-dev --no-install-project
COPY alembic.ini ./
COPY migrations ./migrations
COPY app ./app
RUN uv sync --frozen --no-dev

FROM python:3.11-slim-bookworm AS runtime
RUN useradd --system --uid 10001 --home-dir /srv --shell /usr/sbin/nologin ledger
WORKDIR /srv
COPY --from=build --chown=root:root /srv /srv
ENV PATH=/srv/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PL_HOST=0.0.0.0 \
    PL_PORT=8000 \
    PL_WORKERS=2
USER ledger
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status == 200 else 1)"]
# exec form: the server is PID 1 and receives SIGTERM itself, for a graceful shutdown
CMD ["points-ledger", "serve"]
