"""Every Python block of README.md and docs/*.md runs as written.

Each ```python block runs on its own (a fresh namespace: blocks must be self-contained),
in a temporary working folder. A block that needs what a fresh clone does not have
(trained weights, a benchmark download) is marked by an HTML comment on the line just
before its opening fence, which GitHub does not render:

    <!-- doc-test: skip (needs trained SNLT weights) -->

and is reported as skipped with the text in the comment. Nothing else is skipped.
"""

import re
from pathlib import Path

import pytest

from conftest import HAS_MINILM
from snlt_fast.language.encoders import MINILM_MISSING, MINILM_PACKAGE

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP_MARKER = re.compile(r"<!--\s*doc-test:\s*skip\s*(.*?)\s*-->")
FENCE = re.compile(r"^```(\w*)\s*$")


def python_blocks(path):
    """(first line number, code, skip reason or None) of each ```python block of a Markdown file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, index = [], 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if fence is None:
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        if fence.group(1) == "python":
            marker = SKIP_MARKER.search(lines[index - 1]) if index else None
            blocks.append((index + 2, "\n".join(lines[index + 1 : end]) + "\n", marker and (marker.group(1) or "marked")))
        index = end + 1
    return blocks


CASES = [
    pytest.param(path, line, code, reason, id=f"{path.relative_to(ROOT)}:{line}")
    for path in DOCUMENTS
    for line, code, reason in python_blocks(path)
]


def test_the_documents_have_python_blocks():
    assert len(CASES) >= 5


@pytest.mark.parametrize("path, line, code, reason", CASES)
def test_python_block_runs(path, line, code, reason, tmp_path, monkeypatch):
    if reason:
        pytest.skip(reason)
    monkeypatch.chdir(tmp_path)
    try:
        exec(compile(code, f"{path.name}:{line}", "exec"), {"__name__": "__doc_block__"})
    except Exception as error:
        # The default sentence encoder comes from a package that some machines' images lack.
        if not HAS_MINILM and MINILM_PACKAGE in str(error):
            pytest.skip(MINILM_MISSING)
        raise
