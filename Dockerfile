# One image for every Python service: auth (4001), invoice (4002), notification (4004),
# the arq worker (and the planned expense subgraph, 4003). compose.yaml picks the command.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Only what the distribution needs (see .dockerignore); tests, bench and the Node supergraph
# tooling stay out of the image.
COPY pyproject.toml ./
COPY shared ./shared
COPY sat ./sat
COPY subgraphs ./subgraphs
COPY workers ./workers
COPY mcp_bridge ./mcp_bridge
RUN pip install .

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    APP_ENV=production
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app \
 && mkdir /app && chown app:app /app \
 # The receipts volume takes this directory's owner on first mount, so the app user can write.
 && mkdir -p /data/receipts && chown app:app /data/receipts
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# The MCP bridge turns schema/operations/*.graphql into tools, typed by schema/supergraph.graphql.
COPY schema /app/schema
ENV MCP_SCHEMA_DIR=/app/schema
USER 10001:10001
EXPOSE 4001 4002 4003 4004 4005
# Overridden per service in compose.yaml.
# --no-proxy-headers: uvicorn must never take the client address from X-Forwarded-For itself; only
# shared/client_address.py decides, and only for requests carrying the gateway's secret.
CMD ["uvicorn", "subgraphs.auth.app:app", "--host", "0.0.0.0", "--port", "4001", "--no-proxy-headers", "--timeout-keep-alive", "75", "--ws-per-message-deflate", "false"]
