"""docs/library.md is executed: every snippet runs and prints what the page says it prints.

The page's ```python blocks run in order, in one namespace, in a fresh Python process whose
working folder is empty (``tmp_path``); a block that raises fails the test with the page's
line number in the traceback. What each block prints must equal the ```text block right after
it (a block with no ```text block must print nothing). A block whose first line is
``# file: NAME.py`` is written to that file instead (later blocks import it). The ```bash
lines that start with ``grlab`` run in the same folder, if this grlab has every flag they use.

``python tests/test_docs.py`` prints each block's output, for writing the page.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "library.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
FILE_MARK = re.compile(r"\A# file: (\w+\.py)\n")
SENTINEL = "\x1e end of block \x1e"


class Block(NamedTuple):
    lang: str
    code: str
    line: int  # of the block's first code line in the page


def blocks(text: str) -> list[Block]:
    return [Block(m.group(1), m.group(2), text.count("\n", 0, m.start(2)) + 1)
            for m in FENCE.finditer(text)]


def snippets(found: list[Block]) -> list[tuple[Block, str]]:
    """(python block, the output the page shows for it) for every block that runs."""
    pairs = []
    for i, block in enumerate(found):
        if block.lang != "python" or FILE_MARK.match(block.code):
            continue
        after = found[i + 1] if i + 1 < len(found) else None
        pairs.append((block, after.code if after is not None and after.lang == "text" else ""))
    return pairs


def write_files(found: list[Block], folder: Path) -> list[str]:
    names = []
    for block in found:
        mark = FILE_MARK.match(block.code) if block.lang == "python" else None
        if mark:
            (folder / mark.group(1)).write_text(block.code)
            names.append(mark.group(1))
    return names


def script(pairs: list[tuple[Block, str]], doc: Path) -> str:
    """A program that runs each block in one namespace and prints ``SENTINEL`` after each;
    compiled with the page's line numbers, so a traceback points into the page."""
    lines = ["import sys", "namespace = {'__name__': '__main__'}"]
    for block, _ in pairs:
        source = "\n" * (block.line - 1) + block.code
        lines += [f"exec(compile({source!r}, {str(doc)!r}, 'exec'), namespace)",
                  f"print({SENTINEL!r}, flush=True)"]
    return "\n".join(lines) + "\n"


def run_page(doc: Path, folder: Path) -> tuple[subprocess.CompletedProcess, list[tuple]]:
    found = blocks(doc.read_text())
    write_files(found, folder)
    pairs = snippets(found)
    (folder / "run_page.py").write_text(script(pairs, doc))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    done = subprocess.run([sys.executable, "run_page.py"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300)
    return done, pairs


def compare_outputs(stdout: str, pairs: list[tuple[Block, str]]) -> list[str]:
    """One message per block whose output differs from the page's."""
    outputs = stdout.split(SENTINEL + "\n")
    problems = []
    for (block, expected), got in zip(pairs, outputs, strict=False):
        if got != expected:
            problems.append(f"block at line {block.line} printed:\n{got}\nthe page shows:\n"
                            f"{expected}")
    return problems


def test_every_snippet_runs_and_prints_what_the_page_shows(tmp_path):
    done, pairs = run_page(DOC, tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    assert len(pairs) >= 10
    problems = compare_outputs(done.stdout, pairs)
    assert not problems, "\n\n".join(problems)


def _flags(command: list[str]) -> set[str]:
    return {word.split("=")[0] for word in command if word.startswith("--")}


def test_the_command_line_example_runs(tmp_path):
    found = blocks(DOC.read_text())
    write_files(found, tmp_path)
    commands = [shlex.split(line) for block in found if block.lang == "bash"
                for line in block.code.splitlines() if line.startswith("grlab ")]
    assert commands
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for command in commands:
        help_text = subprocess.run([*command[:2], "--help"], capture_output=True, text=True,
                                   env=env, cwd=tmp_path).stdout
        missing = sorted(flag for flag in _flags(command) if flag not in help_text)
        if missing:
            pytest.skip(f"this grlab has no {', '.join(missing)}")
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-4000:]
        table = (tmp_path / command[command.index("--out") + 1] / "table.md").read_text()
        losses = command[command.index("--losses") + 1:]
        losses = losses[:next(i for i, word in enumerate(losses) if word.startswith("--"))]
        first = table.split("\n\n| ")[1]  # the reward table; the off-policyness table follows
        rows = [line for line in ("| " + first).splitlines() if line.startswith("| ")][2:]
        assert len(rows) == len(losses) and "| my-loss |" in table


def test_a_snippet_that_raises_or_prints_otherwise_fails_the_check(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("```python\nprint(1 + 1)\n```\n\n```text\n3\n```\n")
    done, pairs = run_page(page, tmp_path)
    assert done.returncode == 0 and compare_outputs(done.stdout, pairs)
    page.write_text("text\n\n```python\nx = 1\n```\n\n```python\nraise ValueError(x)\n```\n")
    done, _ = run_page(page, tmp_path)
    assert done.returncode != 0 and f'{page}", line 8' in done.stderr  # the raise


if __name__ == "__main__":  # print every block's output, for writing the page
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        done, pairs = run_page(DOC, Path(folder))
    for (block, _), got in zip(pairs, done.stdout.split(SENTINEL + "\n"), strict=False):
        print(f"--- line {block.line}\n{got}", end="")
    print(done.stderr[-4000:], file=sys.stderr)
