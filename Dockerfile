# syntax=docker/dockerfile:1
#
# thoughtguard images. Two targets:
#
#   docker build --target gateway  -t thoughtguard:0.1.0 .
#       The gateway alone: slim Python, no torch, no vLLM. Guards an OpenAI-compatible upstream
#       given by URL (THOUGHTGUARD_UPSTREAM__URL or `--upstream`). Use it next to vLLM's own image
#       (the Helm chart's sidecar or separate topologies) or in front of an existing vLLM Service.
#
#   docker build --target allinone -t thoughtguard:0.1.0-allinone .
#       vLLM's official OpenAI-server image with the gateway installed on top; the gateway starts
#       and supervises vLLM as a child process (`thoughtguard serve --model ...`). One container,
#       one port (8000): for `docker run --gpus all` on a single GPU host.
#
# Both run as a non-root user, write nothing outside /tmp (HOME and every cache point there), and
# work with a read-only root filesystem when /tmp is a writable volume. Base images are pinned by
# exact tag; pin them by digest in your registry mirror with --build-arg.

ARG PYTHON_IMAGE=python:3.12.12-slim-bookworm
ARG VLLM_IMAGE=vllm/vllm-openai:v0.30.0

############################ build: the thoughtguard wheel and the gateway's venv ############################
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Only what the package build reads: metadata, readme, and the two packages (policies and
# detector artifacts are package data under guard/).
COPY pyproject.toml README.md ./
COPY server/ server/
COPY guard/ guard/
# `pip install .` with the core dependencies only: no [cpu]/[vllm] extra, so no torch and no vLLM.
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/thoughtguard \
    && /opt/thoughtguard/bin/python -m pip install --no-cache-dir /wheels/thoughtguard-*.whl \
    && /opt/thoughtguard/bin/thoughtguard serve --help > /dev/null

############################ gateway: slim, non-root, guards an upstream by URL ############################
FROM ${PYTHON_IMAGE} AS gateway
LABEL org.opencontainers.image.title="thoughtguard-gateway" \
      org.opencontainers.image.description="Guardrail gateway for reasoning models (no torch, no vLLM)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 thoughtguard \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
       --shell /usr/sbin/nologin thoughtguard
COPY --from=build /opt/thoughtguard /opt/thoughtguard
ENV PATH=/opt/thoughtguard/bin:${PATH} \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    XDG_CONFIG_HOME=/tmp/.config \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    THOUGHTGUARD_HOST=0.0.0.0 \
    THOUGHTGUARD_PORT=8000
WORKDIR /tmp
USER 10001:10001
EXPOSE 8000
# No curl in slim images: the check is the image's own Python.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('THOUGHTGUARD_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["thoughtguard", "serve"]
# Upstream by env (THOUGHTGUARD_UPSTREAM__URL, default http://127.0.0.1:8001/v1) or by args,
# e.g. `docker run thoughtguard:0.1.0 --upstream http://vllm:8000/v1`.
CMD []

############################ allinone: vLLM's OpenAI server image + the gateway supervising it ############################
FROM ${VLLM_IMAGE} AS allinone
LABEL org.opencontainers.image.title="thoughtguard-allinone" \
      org.opencontainers.image.description="thoughtguard gateway supervising vLLM in one container" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /wheels/ /tmp/thoughtguard-wheels/
# Install into vLLM's own Python (the supervisor starts `python -m vllm...` with the gateway's
# interpreter), constrained to the versions vLLM ships so nothing vLLM depends on moves.
RUN python3 -m pip list --format=freeze > /tmp/vllm-constraints.txt \
    && uv pip install --system --no-cache --constraint /tmp/vllm-constraints.txt /tmp/thoughtguard-wheels/thoughtguard-*.whl \
    && rm -rf /tmp/thoughtguard-wheels /tmp/vllm-constraints.txt \
    && thoughtguard serve --help > /dev/null \
    && groupadd --system --gid 10001 thoughtguard \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
       --shell /usr/sbin/nologin thoughtguard
# HF_HUB_OFFLINE=0: a Hugging Face id downloads into HF_HOME (mount a volume there, or mount a
# model folder and pass its path to --model, and set HF_HUB_OFFLINE=1 on air-gapped clusters).
ENV HOME=/tmp \
    USER=thoughtguard \
    XDG_CACHE_HOME=/tmp/.cache \
    XDG_CONFIG_HOME=/tmp/.config \
    HF_HOME=/tmp/huggingface \
    HF_HUB_OFFLINE=0 \
    VLLM_CACHE_ROOT=/tmp/vllm \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    THOUGHTGUARD_HOST=0.0.0.0 \
    THOUGHTGUARD_PORT=8000
WORKDIR /tmp
USER 10001:10001
EXPOSE 8000
# The gateway answers /health at once; vLLM loads behind it (GET /ready turns 200 when it has).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('THOUGHTGUARD_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["thoughtguard", "serve"]
# Mount the model at /models/model, or override: `--model Qwen/QwQ-32B --reasoning-parser
# deepseek_r1 -- --max-model-len 16384` (everything after `--` goes to vLLM).
CMD ["--model", "/models/model", "--vllm-port", "8001", "--ready-timeout", "1800"]
