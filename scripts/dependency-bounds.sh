#!/usr/bin/env bash
# Usage: scripts/dependency-bounds.sh lowest|newest
# The ranges pyproject.toml declares must be true at both ends. `lowest`: every direct
# dependency at its floor (uv's lowest-direct resolution), so a floor that is too low fails
# here, not on a user's machine. `newest`: the highest release of everything (no upper
# bounds; nothing reused from older pins), so an incompatible release — an aiohttp that
# changed the internals the slow-client guard reads, say — fails here first. Either way a
# scratch venv, and the unit tests run there.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  lowest) resolution=(--resolution lowest-direct) ;;
  newest) resolution=(--resolution highest --upgrade) ;;
  *) echo "usage: $0 lowest|newest" >&2; exit 2 ;;
esac
venv=.venv-$1
uv=.venv/bin/uv
python=$(.venv/bin/python -c 'import sys; print(sys.executable)')
rm -rf "$venv"
"$uv" venv --quiet --python "$python" "$venv"
"$uv" pip install --quiet --python "$venv/bin/python" "${resolution[@]}" \
  -e '.[fast,demo,agent,test]'
"$uv" pip freeze --python "$venv/bin/python" |
  grep -iE '^(aiohttp|aiohttp-cors|aiolimiter|prometheus-client|pyyaml|redis|uvloop|openai-chatkit|openai-agents|openai|sqlalchemy|aiosqlite|asyncpg)==' |
  tr '\n' ' ' | sed "s/^/$1 versions: /; s/ \$/\n/"
# The tests marked `lowest` (pytest.mark.lowest): unit tests that need no browser, no
# schema fuzzer and no manifest validator (dev tools, not dependencies of the package).
# Only the modules that carry the mark are collected: the others may import those tools.
mapfile -t marked < <(grep -l 'pytest\.mark\.lowest' tests/test_*.py)
"$venv/bin/pytest" -q -p no:cacheprovider -m 'lowest and not slow' "${marked[@]}"
