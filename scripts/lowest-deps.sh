#!/usr/bin/env bash
# The floors pyproject.toml declares must be true: install the lowest versions it allows
# (uv's lowest-direct resolution: every direct dependency at its floor) into a scratch venv
# and run the unit tests there. A floor that is too low fails here, not on a user's machine.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-lowest
uv=.venv/bin/uv
python=$(.venv/bin/python -c 'import sys; print(sys.executable)')
rm -rf "$venv"
"$uv" venv --quiet --python "$python" "$venv"
"$uv" pip install --quiet --python "$venv/bin/python" --resolution lowest-direct \
  -e '.[fast,demo,agent,test]'
"$uv" pip freeze --python "$venv/bin/python" |
  grep -iE '^(aiohttp|aiohttp-cors|aiolimiter|prometheus-client|pyyaml|redis|uvloop|openai-chatkit|openai-agents|openai|sqlalchemy|aiosqlite|asyncpg)==' |
  tr '\n' ' ' | sed 's/^/lowest versions: /; s/ $/\n/'
# The unit tests: no browser, no schema fuzzer, no manifest validator (dev tools, not
# dependencies of the package).
"$venv/bin/pytest" -q -p no:cacheprovider -m 'not slow' \
  tests/test_policy.py tests/test_clientip.py tests/test_token_routes.py tests/test_proxy.py \
  tests/test_logs.py tests/test_request_metrics.py tests/test_limits_behaviour.py \
  tests/test_fake_openai_sdk.py tests/test_hostile.py \
  tests/test_agent_route.py tests/test_agent_store.py tests/test_hostile_agent.py \
  tests/test_fake_responses_sdk.py
