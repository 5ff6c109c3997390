#!/usr/bin/env bash
# A stand-in for the Dockerfile's base image (python:3.11-slim), for `make image-test` on
# a machine that reaches no container registry: Debian bookworm's own python3.11 from
# debootstrap, arranged like the official image (python, pip on PATH; pip may install
# into the system Python), committed into buildah's storage under the given name.
# Usage: image-base.sh WORKDIR IMAGE-NAME  (buildah's storage options in $BUILDAH_STORE)
set -euo pipefail
work="$1"
name="$2"
read -r -a store <<<"${BUILDAH_STORE:-}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

rootfs="$work/rootfs"
rm -rf "$rootfs"
mkdir -p "$rootfs"
echo "image-test: debootstrap bookworm + python3.11 (a few minutes, once)" >&2
debootstrap --variant=minbase --include=python3.11,python3-pip,python-is-python3,ca-certificates \
  bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  tail -20 "$work/debootstrap.log" >&2
  exit 1
}
# The official image's Python is its own, not Debian's: pip may install into it (PEP 668).
rm -f "$rootfs"/usr/lib/python3.*/EXTERNALLY-MANAGED
# This machine's trust (it may include an egress proxy's CA), for pip in the build: the
# official image trusts the public CAs only, which reach PyPI where nothing intercepts.
host_ca="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"
if [ -f "$host_ca" ]; then
  cp "$host_ca" "$rootfs/etc/ssl/certs/ca-certificates.crt"
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$rootfs/etc/pip.conf"
fi
# What an image does not need: apt's lists and caches, documentation.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/usr/share/doc/* \
  "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*

ctr="$(buildah "${store[@]}" from scratch)"
trap 'buildah "${store[@]}" rm "$ctr" >/dev/null 2>&1 || true' EXIT
buildah "${store[@]}" copy --quiet "$ctr" "$rootfs" / >/dev/null
buildah "${store[@]}" config \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env LANG=C.UTF-8 \
  --cmd python3 \
  --label org.opencontainers.image.description="stand-in for python:3.11-slim (image-test)" \
  "$ctr"
buildah "${store[@]}" commit --quiet "$ctr" "$name" >/dev/null
rm -rf "$rootfs"
