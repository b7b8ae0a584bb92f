# syntax=docker/dockerfile:1
# flame-notifier: pushes events to node agents (gRPC on :10101).
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
RUN /opt/build/bin/python deploy/docker/localdeps.py . services/notifier > packages.txt \
 && xargs -a packages.txt /opt/build/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation \
        --wheel-dir /wheels \
 && python -m venv /opt/flame \
 && /opt/flame/bin/pip install --no-cache-dir --constraint constraints.txt /wheels/*.whl

FROM python:3.11.13-slim-bookworm
LABEL org.opencontainers.image.title="flame-notifier" \
      org.opencontainers.image.description="Flame notifier: pushes events to node agents"
RUN groupadd --system --gid 10001 flame \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/flame --create-home \
        --shell /usr/sbin/nologin flame
COPY --from=build /opt/flame /opt/flame
COPY deploy/docker/healthcheck.py /opt/flame/healthcheck.py
ENV PATH=/opt/flame/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FLAME_NOTIFIER_LISTEN=0.0.0.0:10101
USER 10001:10001
EXPOSE 10101
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "/opt/flame/healthcheck.py", "notifier"]
ENTRYPOINT ["flame-notifier"]
