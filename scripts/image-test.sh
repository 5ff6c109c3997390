#!/usr/bin/env bash
# `make image-test`: build the real Dockerfile, unchanged, and check the image it makes
# (tests/image_check.py: the default command, a mounted policy, a token and an agent turn,
# the non-root user, the SQLite volume, `check`).
#
# No container registry is reachable here, so the Dockerfile's FROM image is a stand-in
# built from Debian bookworm's python3.11 (scripts/image-base.sh) under the very name the
# FROM lines use; the published Dockerfile is not touched. buildah builds and runs it
# without a daemon (vfs storage, chroot isolation). Everything lives under
# $CHATKIT_IMAGE_CACHE (default /var/tmp/chatkit-gateway-image): the stand-in base is
# built once per version of image-base.sh and of this machine's CA bundle, and buildah's
# layer cache keeps unchanged steps.
#
# Tools missing (buildah, debootstrap) are installed from Debian when we are root; under
# CI=true one still missing is a failure, elsewhere the test says so and is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS

missing_tools() {
  command -v buildah >/dev/null 2>&1 || echo buildah
  command -v debootstrap >/dev/null 2>&1 || echo debootstrap
}
mapfile -t need < <(missing_tools)
if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "image-test: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
mapfile -t missing < <(missing_tools)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "${CI:-}" = "true" ]; then
    echo "image-test: missing under CI: ${missing[*]}" >&2
    exit 1
  fi
  echo "image-test SKIPPED: missing ${missing[*]} (apt-get install ${missing[*]})" >&2
  exit 0
fi

cache="${CHATKIT_IMAGE_CACHE:-/var/tmp/chatkit-gateway-image}"
mkdir -p "$cache"
export BUILDAH_STORE="--root $cache/storage --runroot $cache/run --storage-driver vfs"
read -r -a store <<<"$BUILDAH_STORE"
image="localhost/chatkit-gateway:image-test"

# The stand-in base, keyed by what makes it.
host_ca="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"
key="$(cat scripts/image-base.sh "$host_ca" 2>/dev/null | sha256sum | cut -c1-16)"
base="localhost/chatkit-gateway-stand-in-base:$key"
if ! buildah "${store[@]}" inspect --type image "$base" >/dev/null 2>&1; then
  scripts/image-base.sh "$cache" "$base"
fi
# Tagged as each FROM of the Dockerfile names it (Docker Hub's short names included).
mapfile -t froms < <(awk 'toupper($1) == "FROM" { print $2 }' Dockerfile | grep -v -- '--' | sort -u)
for from in "${froms[@]}"; do
  case "$from" in
  */*/*) name="$from" ;;
  */*) name="docker.io/$from" ;;
  *) name="docker.io/library/$from" ;;
  esac
  buildah "${store[@]}" tag "$base" "$name"
done
echo "image-test: stand-in base ready ($((SECONDS - started)) s)" >&2

buildah "${store[@]}" bud --quiet --pull=never --layers --isolation chroot --format docker \
  -f Dockerfile -t "$image" . >/dev/null
echo "image-test: image built ($((SECONDS - started)) s)" >&2

python="${PYTHON:-.venv/bin/python}"
"$python" -m tests.image_check "$image"
echo "image-test: passed in $((SECONDS - started)) s" >&2
