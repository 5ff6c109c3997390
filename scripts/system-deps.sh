#!/usr/bin/env bash
# System packages the tests drive for real: redis-server, prometheus (promtool too),
# chromium. Installed from Debian when we are root with apt-get; under CI=true a
# package still missing afterwards is a failure, never a silent skip.
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system packages: ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # The Debian packages start their own daemons; the tests start private ones instead.
  for svc in redis-server prometheus; do
    (service "$svc" stop || true) >/dev/null 2>&1
  done
fi
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "${CI:-}" = "true" ]; then
    echo "missing system packages under CI: ${missing[*]}" >&2
    exit 1
  fi
  echo "warning: missing system packages (their tests will skip): ${missing[*]}" >&2
fi
