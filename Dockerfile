# llm-gateway image. Two stages: the first builds a virtualenv with the package and its
# dependencies, the second copies only that virtualenv onto a slim Python. It runs as uid 10001
# (what deploy/k8s expects) and reads its config from a file mounted at run time:
#   docker build -t llm-gateway .
#   docker run -p 8080:8080 -v "$PWD/gateway.yaml:/etc/llm-gateway/gateway.yaml:ro" \
#     -e OPENAI_API_KEY llm-gateway

FROM python:3.11.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN python -m venv /opt/venv && /opt/venv/bin/pip install .

FROM python:3.11.11-slim-bookworm
# Bytecode is compiled at build time; a read-only root file system needs nothing written.
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin gateway
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
EXPOSE 8080
# Ready means the config is loaded and the store answers (503 while draining or degraded).
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["gateway", "healthcheck", "--url", "http://127.0.0.1:8080/readyz"]
# SIGTERM drains requests in flight (server.drain_timeout_s) before the process exits.
STOPSIGNAL SIGTERM
CMD ["gateway", "serve", "--config", "/etc/llm-gateway/gateway.yaml", "--host", "0.0.0.0"]
