#!/usr/bin/env bash
# System packages the tests drive for real: redis-server, prometheus (promtool too),
# chromium, postgresql, and postgresql-doc-15 (a real site for the knowledge tests).
# Installed from Debian when we are root with apt-get; under CI=true a package still
# missing afterwards is a failure, never a silent skip.
set -euo pipefail

# PostgreSQL's server binaries are not on PATH: Debian keeps them per major version.
have_postgres() {
  local initdb
  for initdb in /usr/lib/postgresql/*/bin/initdb; do
    [ -x "$initdb" ] && [ -x "${initdb%/initdb}/postgres" ] && return 0
  done
  return 1
}

missing_packages() {
  command -v redis-server >/dev/null 2>&1 || echo redis-server
  command -v promtool >/dev/null 2>&1 || echo prometheus
  command -v chromium >/dev/null 2>&1 || echo chromium
  have_postgres || echo postgresql
  # Real documentation no one here wrote, served on loopback to the knowledge ingest.
  [ -f /usr/share/doc/postgresql-doc-15/html/index.html ] || echo postgresql-doc-15
}

mapfile -t need < <(missing_packages)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system packages: ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # The Debian packages start their own daemons (postgresql: the "main" cluster on 5432);
  # the tests start private ones instead.
  for svc in redis-server prometheus postgresql; do
    (service "$svc" stop || true) >/dev/null 2>&1
  done
fi
mapfile -t missing < <(missing_packages)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "${CI:-}" = "true" ]; then
    echo "missing system packages under CI: ${missing[*]}" >&2
    exit 1
  fi
  echo "warning: missing system packages (their tests will skip): ${missing[*]}" >&2
fi
