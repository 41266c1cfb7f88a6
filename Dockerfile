# One image for the operator (default command) and the split Jobs it creates (`splitcore`).
# Build: docker build -t ghcr.io/splitlearn/splitlearn-operator:0.1.0 .

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/splitlearn
ENV PATH=/opt/splitlearn/bin:$PATH
COPY constraints/ci.txt constraints.txt
# CPU-only PyTorch: the Job moves bytes and only `--verify` computes; CUDA would add gigabytes.
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"
COPY pyproject.toml README.md ./
COPY splitcore ./splitcore
COPY operator ./operator
RUN pip install --constraint constraints.txt ".[operator]"

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="splitlearn-operator" \
      org.opencontainers.image.description="Kubernetes operator that splits transformer checkpoints into bottom / trunk / top components" \
      org.opencontainers.image.source="https://github.com/splitlearn/splitlearn-operator" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/splitlearn /opt/splitlearn
# The root filesystem is read-only in pods: every writable path is an emptyDir mount.
ENV PATH=/opt/splitlearn/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONSAFEPATH=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    XDG_CACHE_HOME=/cache \
    HF_HOME=/cache/huggingface \
    TORCH_HOME=/cache/torch
RUN groupadd --gid 10001 splitlearn \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin splitlearn
USER 10001:10001
WORKDIR /tmp
EXPOSE 50051 8000
CMD ["python", "-m", "splitlearn_operator", "--config", "/etc/splitlearn/server_config.yaml"]
