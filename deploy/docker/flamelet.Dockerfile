# syntax=docker/dockerfile:1
# flamelet: the node agent. It runs each task as a child process with its own interpreter
# (`python -m flame.launch config.json`), so the image carries the SDK too.
# Build with deploy/docker/build.sh; the build context is a `git archive` of the repository.
# Base image: python:3.11.13-slim-bookworm, pinned by exact tag and not by digest (no registry
# was reachable where this was written, so no digest could be read); see apiserver.Dockerfile.

FROM python:3.11.13-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY deploy/docker/constraints.txt ./constraints.txt
RUN python -m venv /opt/build \
 && /opt/build/bin/pip install --no-cache-dir --constraint constraints.txt hatchling==1.33.0
# The context holds only the repository's package folders (see build.sh); localdeps.py picks the
# ones this image needs from their pyproject.toml files, so every in-repo dependency is built here
# and none is ever looked up on a package index.
COPY . .
RUN /opt/build/bin/python deploy/docker/localdeps.py . services/flamelet sdk > packages.txt \
 && xargs -a packages.txt /opt/build/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation \
        --wheel-dir /wheels \
 && python -m venv /opt/flame \
 && /opt/flame/bin/pip install --no-cache-dir --constraint constraints.txt /wheels/*.whl
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# torch is optional (WITH_TORCH=true) and always an exact CPU build: TORCH_VERSION must be
# X.Y.Z, never empty or a range. The CPU index is an extra index: "2.13.0+cpu" from it sorts
# above the CUDA build "2.13.0" of the default index, and the dependencies come from the default.
ARG WITH_TORCH=false
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN if [ "$WITH_TORCH" = "true" ]; then \
        echo "$TORCH_VERSION" | grep -Eq "^[0-9]+\.[0-9]+\.[0-9]+$" \
        || { echo "TORCH_VERSION must be an exact X.Y.Z version" >&2; exit 1; }; \
        /opt/flame/bin/pip install --no-cache-dir --constraint constraints.txt \
            --extra-index-url "$TORCH_INDEX_URL" "torch==${TORCH_VERSION}"; \
    fi

FROM python:3.11.13-slim-bookworm
LABEL org.opencontainers.image.title="flamelet" \
      org.opencontainers.image.description="Flame node agent with the flame SDK for its tasks"
RUN groupadd --system --gid 10001 flame \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/flame --create-home \
        --shell /usr/sbin/nologin flame
RUN install -d -o 10001 -g 10001 -m 0700 /var/lib/flamelet
COPY --from=build /opt/flame /opt/flame
ENV PATH=/opt/flame/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FLAMELET_HOME=/var/lib/flamelet
USER 10001:10001
WORKDIR /var/lib/flamelet
# No HEALTHCHECK: the agent listens on no port; the control plane tracks it by presence.
ENTRYPOINT ["flamelet"]
CMD ["run"]
