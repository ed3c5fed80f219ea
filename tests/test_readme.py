"""The README and the docs pages cannot drift: every ```python block runs.

Each document is run as a reader pastes it: its ```python blocks in order,
in one namespace, in a fresh temporary working directory (the examples write
``states.zarr`` and the like there). There is one test per block; a block's
test first runs the blocks before it that have not run yet, so any single
test can be run alone.

Two documented aids, nothing else:

- ``<!-- symjac-test: replace "OLD" "NEW" -->`` on the line before a block
  makes the test run it with every OLD replaced by NEW (a smaller size for a
  block that would take long; GitHub and Sphinx do not show the comment).
- A document that imports a module written by ``symjac codegen`` from
  ``generated/`` (the README's codegen section) gets it there first: the
  test runs the shell command the document shows, with ``--backend numpy``
  added so that no second compiler run is needed (the Cython module's
  calls are the same; tests/test_codegen.py builds and checks that one).

Blocks of other languages (shell commands) are not run. Builds share the
suite's cache (tests/conftest.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md"] + sorted((ROOT / "docs").rglob("*.md"))
DOCUMENTS = [path for path in DOCUMENTS if "_build" not in path.parts]

FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[^\s`]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
                   re.MULTILINE | re.DOTALL)
REPLACE = re.compile(r'<!--\s*symjac-test:\s*replace\s+"([^"]*)"\s+"([^"]*)"\s*-->\s*$')
CODEGEN = re.compile(r"^\s*(symjac codegen \S+:\S+ (?:--arg \S+ )+--wrt \S+ --out generated/)", re.MULTILINE)


@dataclass(frozen=True)
class Block:
    document: Path
    line: int
    code: str

    @property
    def id(self):
        return f"{self.document.relative_to(ROOT)}:{self.line}"


def python_blocks(path: Path) -> list[Block]:
    text = path.read_text()
    blocks = []
    for match in FENCE.finditer(text):
        if match.group("lang") not in ("python", "py"):
            continue
        code = textwrap.dedent(match.group("body"))
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        replace = REPLACE.search(before)
        if replace:
            code = code.replace(replace.group(1), replace.group(2))
        blocks.append(Block(path, text.count("\n", 0, match.start()) + 2, code))
    return blocks


BLOCKS = [block for path in DOCUMENTS for block in python_blocks(path)]


class Reader:
    """One document's namespace and working directory; runs its blocks in order."""

    def __init__(self, path: Path, workdir: Path):
        self.path, self.workdir = path, workdir
        self.blocks = python_blocks(path)
        self.namespace = {"__name__": f"readme_{path.stem}"}
        self.done = 0
        self.prepared = False

    def prepare(self):
        command = CODEGEN.search(self.path.read_text())
        if command and 'sys.path.insert(0, "generated")' in self.path.read_text():
            words = command.group(1).split()[2:]            # after "symjac codegen"
            target = words[0]
            file, _, name = target.partition(":")
            words[0] = f"{ROOT / file}:{name}"
            subprocess.run([sys.executable, "-m", "symjac", "codegen", *words, "--backend", "numpy", "--quiet"],
                           cwd=self.workdir, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        self.prepared = True

    def run_through(self, block: Block):
        index = next(i for i, b in enumerate(self.blocks) if b.line == block.line)
        cwd, path = os.getcwd(), list(sys.path)
        os.chdir(self.workdir)
        try:
            if not self.prepared:
                self.prepare()
            while self.done <= index:
                current = self.blocks[self.done]
                self.done += 1
                exec(compile(current.code, current.id, "exec"), self.namespace)
        finally:
            os.chdir(cwd)
            sys.path[:] = path
        return self.namespace


@pytest.fixture(scope="module")
def readers(tmp_path_factory):
    made = {}

    def reader(path):
        if path not in made:
            made[path] = Reader(path, tmp_path_factory.mktemp(path.stem))
        return made[path]

    yield reader
    for name in [name for name in sys.modules if name == "rober"]:
        del sys.modules[name]   # the generated module imported by the README


def test_every_document_has_python_blocks_and_the_readme_keeps_its_two_commands():
    assert {block.document for block in BLOCKS} >= {ROOT / "README.md"}
    readme = (ROOT / "README.md").read_text()
    assert ("python3 -m venv .venv && .venv/bin/pip install -q -e . && "
            ".venv/bin/python -m symjac.examples.rober") in readme
    assert ("python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && "
            ".venv/bin/python -m pytest -q") in readme
    assert "sphinx-build -W --keep-going -b html docs docs/_build/html" in readme


def test_block_extraction_sees_indented_blocks_and_replacements(tmp_path):
    page = tmp_path / "page.md"
    page.write_text('text\n\n<!-- symjac-test: replace "1000" "10" -->\n```python\nx = 1000\n```\n\n'
                    '- item:\n\n  ```python\n  y = x + 1\n  ```\n\n```bash\nrm -rf /\n```\n')
    blocks = python_blocks(page)
    assert [block.code for block in blocks] == ["x = 10\n", "y = x + 1\n"]
    assert [block.line for block in blocks] == [5, 11]


@pytest.mark.parametrize("block", BLOCKS, ids=[block.id for block in BLOCKS])
def test_block_runs(block, readers):
    readers(block.document).run_through(block)
