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
# The tests marked `lowest` (pytest.mark.lowest): unit tests that need no browser, no
# schema fuzzer and no manifest validator (dev tools, not dependencies of the package).
# Only the modules that carry the mark are collected: the others may import those tools.
mapfile -t marked < <(grep -l 'pytest\.mark\.lowest' tests/test_*.py)
"$venv/bin/pytest" -q -p no:cacheprovider -m 'lowest and not slow' "${marked[@]}"
