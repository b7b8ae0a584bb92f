# syntax=docker/dockerfile:1
# flame-mlflow: the MLflow tracking server the chart runs, with the PostgreSQL driver and the
# S3 client (for MinIO or any S3-compatible artifact store); versions from constraints.txt.
# Build with deploy/docker/build.sh; the build context is a `git archive` of the repository.
# Base image: python:3.11.13-slim-bookworm, pinned by exact tag and not by digest (no registry
# was reachable where this was written, so no digest could be read); see apiserver.Dockerfile.

FROM python:3.11.13-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY deploy/docker/constraints.txt ./constraints.txt
RUN python -m venv /opt/mlflow \
 && /opt/mlflow/bin/pip install --no-cache-dir --constraint constraints.txt \
        mlflow==3.17.2 psycopg2-binary==2.9.13 boto3==1.44.18

FROM python:3.11.13-slim-bookworm
LABEL org.opencontainers.image.title="flame-mlflow" \
      org.opencontainers.image.description="MLflow tracking server for Flame (PostgreSQL, S3)"
RUN groupadd --system --gid 10001 flame \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/flame --create-home \
        --shell /usr/sbin/nologin flame
COPY --from=build /opt/mlflow /opt/mlflow
COPY deploy/docker/healthcheck.py /opt/mlflow/healthcheck.py
ENV PATH=/opt/mlflow/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MLFLOW_HOST=0.0.0.0 \
    MLFLOW_PORT=5000
USER 10001:10001
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/opt/mlflow/healthcheck.py", "mlflow"]
ENTRYPOINT ["mlflow", "server"]
