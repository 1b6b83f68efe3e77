# Multi-stage image: dependencies resolved from uv.lock in a build stage, a slim non-root runtime.
# The container runs `points-ledger serve` against DATABASE_URL (set it; the embedded Postgres is for
# development machines, not containers).
FROM python:3.11-slim AS build
RUN pip install --no-cache-dir uv
WORKDIR /srv
ENV UV_PYTHON_DOWNLOADS=never UV_LINK_MODE=copy
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY alembic.ini ./
COPY migrations ./migrations
COPY app ./app
RUN uv sync --frozen --no-dev

FROM python:3.11-slim AS runtime
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
