"""No shipped example names a model OpenAI retires on 2026-12-11 (issue 20): a site owner
who copies one would have a chat that stops on that day."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Shut down on 2026-12-11 (OpenAI's deprecations page, notice of 2026-06-11).
RETIRING = re.compile(r"(?<![\w.-])(gpt-5(?:-mini|-nano|-pro)?|o3(?:-pro)?)(?![\w.-])")


def _shipped() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    skip = {"tests/test_shipped_models.py"}
    return [ROOT / name for name in out.splitlines() if name not in skip]


def test_no_shipped_file_names_a_retiring_model() -> None:
    """Not as a value, and not in prose either: a name in a README is the one a site owner
    copies."""
    found = []
    for path in _shipped():
        if not path.is_file() or path.suffix in {".png", ".ico"}:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for n, line in enumerate(text.splitlines(), 1):
            if RETIRING.search(line):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "\n".join(found)


def test_the_readme_says_where_to_check_a_models_shutdown_date() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "deprecations page" in readme
    assert "shutdown_date" in readme
