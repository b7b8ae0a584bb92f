#!/usr/bin/env bash
# Build every Flame image with one tag:
#
#   deploy/docker/build.sh [TAG]            # TAG defaults to the chart's appVersion
#   REGISTRY=registry.example.com PUSH=1 deploy/docker/build.sh 0.1.0
#   WITH_TORCH=true deploy/docker/build.sh  # task runner and flamelet with torch (CPU) inside
#
# Images: [${REGISTRY}/]flame/{apiserver,controller,notifier,flamelet,task-runner,mlflow}:TAG, the
# names the Helm chart expects (values image.registry + <component>.image.repository).
#
# The build context is `git archive HEAD` of the repository's package folders (proto/, spec/,
# services/, sdk/) and deploy/docker/: only committed files go in, so nothing untracked (a venv,
# a local token, an identity file) can end up in an image. Commit before building. Do not point
# `docker build` at the work tree itself: the Dockerfiles copy their whole context.
#
# NOT RUN HERE: this script was written on a machine with no container engine (no Docker, no
# BuildKit, no registry access). It has been checked with `bash -n` and shellcheck-style review
# only; the Dockerfiles pass hadolint (tests/deploy). The first real build may need fixes.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
chart_app_version="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$root/deploy/helm/flame/Chart.yaml")"
tag="${1:-${chart_app_version}}"
registry="${REGISTRY:-}"
engine="${CONTAINER_ENGINE:-docker}"
with_torch="${WITH_TORCH:-false}"
torch_version="${TORCH_VERSION:-2.13.0}"

if [[ -z "$tag" ]]; then
  echo "no tag given and no appVersion in deploy/helm/flame/Chart.yaml" >&2
  exit 2
fi
if ! command -v "$engine" >/dev/null 2>&1; then
  echo "$engine not found (set CONTAINER_ENGINE=podman to use podman)" >&2
  exit 2
fi

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
paths=()
for path in proto spec services sdk deploy/docker; do
  if git -C "$root" cat-file -e "HEAD:$path" 2>/dev/null; then
    paths+=("$path")
  fi
done
git -C "$root" archive --format=tar HEAD "${paths[@]}" | tar -x -C "$context"

for image in apiserver controller notifier flamelet task-runner mlflow; do
  ref="${registry:+${registry}/}flame/${image}:${tag}"
  echo "building ${ref}"
  "$engine" build \
    --file "$context/deploy/docker/${image}.Dockerfile" \
    --build-arg "WITH_TORCH=${with_torch}" \
    --build-arg "TORCH_VERSION=${torch_version}" \
    --label "org.opencontainers.image.version=${tag}" \
    --label "org.opencontainers.image.revision=$(git -C "$root" rev-parse HEAD)" \
    --tag "$ref" \
    "$context"
  if [[ "${PUSH:-0}" == "1" ]]; then
    "$engine" push "$ref"
  fi
done
