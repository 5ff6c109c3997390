#!/usr/bin/env bash
# No upper bounds in pyproject.toml, so the newest release of every dependency must work:
# install the highest versions it allows (uv's highest resolution, nothing reused from a
# cache of older pins) into a scratch venv and run the unit tests there. An incompatible
# release (an aiohttp that changed the internals the slow-client guard reads, say) fails
# here, not on a user's machine. The counterpart of lowest-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-newest
uv=.venv/bin/uv
python=$(.venv/bin/python -c 'import sys; print(sys.executable)')
rm -rf "$venv"
"$uv" venv --quiet --python "$python" "$venv"
"$uv" pip install --quiet --python "$venv/bin/python" --resolution highest --upgrade \
  -e '.[fast,demo,agent,test]'
"$uv" pip freeze --python "$venv/bin/python" |
  grep -iE '^(aiohttp|aiohttp-cors|aiolimiter|prometheus-client|pyyaml|redis|uvloop|openai-chatkit|openai-agents|openai|sqlalchemy|aiosqlite|asyncpg)==' |
  tr '\n' ' ' | sed 's/^/newest versions: /; s/ $/\n/'
# The same tests as lowest-deps.sh: those marked `lowest` (no browser, schema fuzzer or
# manifest validator), collected only from the modules that carry the mark.
mapfile -t marked < <(grep -l 'pytest\.mark\.lowest' tests/test_*.py)
"$venv/bin/pytest" -q -p no:cacheprovider -m 'lowest and not slow' "${marked[@]}"
