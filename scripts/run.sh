#!/usr/bin/env bash
# `make run`: the gateway on :8080 with gateway.yaml, and the demo pages (demo/) on
# http://localhost:8000 — an allowed origin of the shipped routes — plus the demo ChatKit
# backend on :8001 when a chatkit_proxy route targets it. Without OPENAI_API_KEY
# the gateway uses the built-in stub upstream (fake ek_stub_ secrets) and says so.
# Ctrl-C or SIGTERM stops them all and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
args=(serve --config "${GATEWAY_CONFIG:-gateway.yaml}")
if [ -z "${OPENAI_API_KEY:-}" ]; then
  echo "OPENAI_API_KEY is not set: using the built-in stub upstream (fake secrets, no OpenAI calls)." >&2
  args+=(--stub-upstream)
fi
gateway_port="${GATEWAY_PORT:-8080}"
# A development loop: drain for 1 s after Ctrl-C, not the production 10 s.
export GATEWAY_SHUTDOWN_GRACE="${GATEWAY_SHUTDOWN_GRACE:-1}"
demo_port="${DEMO_PORT:-8000}"

pids=()
stop() {
  trap - INT TERM EXIT
  for pid in ${pids[@]+"${pids[@]}"}; do kill -TERM "$pid" 2>/dev/null || true; done
  wait ${pids[@]+"${pids[@]}"} 2>/dev/null || true
}
# Ctrl-C (SIGINT to the whole foreground group) or SIGTERM is the way to stop: a clean
# stop, exit 0, so that make prints no "*** Error" after it.
trap 'stop; exit 0' INT TERM
trap stop EXIT

# The demo pages first: they serve the project's docs (/project/) that the agent route's
# `knowledge` ingests as soon as the gateway starts.
.venv/bin/python demo/serve.py --host "${DEMO_HOST:-127.0.0.1}" --port "$demo_port" >/dev/null &
pids+=($!)
wait_for() {  # port: until it answers, or stop everything if a part died
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null || { stop; exit 1; }; done
    sleep 0.1
  done
}
wait_for "$demo_port"
.venv/bin/chatkit-gateway "${args[@]}" &
pids+=($!)
# The echo ChatKit server behind a chatkit_proxy route, when the policy points one at it
# (gateway.yaml's target follows CHATKIT_DEMO_BACKEND_PORT, written as the variable).
backend_port="${CHATKIT_DEMO_BACKEND_PORT:-8001}"
backend_url="http://127.0.0.1:${backend_port}/chatkit"
backend_note="(no chatkit_proxy route targets ${backend_url}: see README, \"Demo pages\")"
# shellcheck disable=SC2016  # the pattern matches the policy's literal ${...}
if grep -Eq 'target: *http://127\.0\.0\.1:(\$\{CHATKIT_DEMO_BACKEND_PORT:-8001\}|'"${backend_port}"')/chatkit' \
  "${GATEWAY_CONFIG:-gateway.yaml}"; then
  .venv/bin/python demo/chatkit_backend.py --port "${backend_port}" >/dev/null &
  pids+=($!)
  backend_note="ChatKit demo backend: ${backend_url}"
fi

# The banner comes when everything answers, so its links work when they are shown.
ports=("$gateway_port" "$demo_port")
[ ${#pids[@]} -lt 3 ] || ports+=("$backend_port")
for port in "${ports[@]}"; do wait_for "$port"; done

query=""
[ "$gateway_port" = 8080 ] || query="?gateway=http://localhost:${gateway_port}"
cat >&2 <<MSG

  Gateway     http://127.0.0.1:${gateway_port}/   (metrics: http://127.0.0.1:${gateway_port}/metrics)
  Demo pages  http://localhost:${demo_port}/agent.html${query}  a chat served by the gateway (chatkit_agent):
                ask about chatkit-gateway; it searches this project's docs and links the pages
              http://localhost:${demo_port}/project/            those docs, as the gateway ingests them (knowledge)
              http://localhost:${demo_port}/${query}            client secrets, as the ChatKit widget gets them
              http://localhost:${demo_port}/proxy.html${query}  ChatKit requests through a chatkit_proxy route
                ${backend_note}

  Ctrl-C stops them all.

MSG
# Whichever ends first (a crash, a port in use) ends the others too. (Polling, not
# `wait -n`, so the bash 3.2 of macOS runs this as well.)
running() {
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null || return 1; done
}
while running; do
  sleep 0.5 & wait $! || true
done
stop
exit 1
