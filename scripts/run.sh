#!/usr/bin/env bash
# `make run`: the gateway on :8080 with gateway.yaml. Without OPENAI_API_KEY it uses the
# built-in stub upstream (fake ek_stub_ secrets) and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
args=(serve --config "${GATEWAY_CONFIG:-gateway.yaml}")
if [ -z "${OPENAI_API_KEY:-}" ]; then
  echo "OPENAI_API_KEY is not set: using the built-in stub upstream (fake secrets, no OpenAI calls)." >&2
  args+=(--stub-upstream)
fi
exec .venv/bin/chatkit-gateway "${args[@]}"
