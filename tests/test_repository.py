"""The repository stands alone: the lint environment names only folders that exist (and passes),
and no code, spec, test or document points to a file that is not in the repository."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
#: What ships or documents the project (results/ holds run outputs, except the published numbers).
SCANNED = ["fsad_bench", "methods", "protocols", "tests", "examples", "benchmarks", "docs", "results/paper",
           ".ci", "README.md", "pyproject.toml", "tox.ini"]
#: A reference to a document: a file name ending .md or .rst (with its folders), a path under
#: docs/, or one under a shared/ folder (material outside the repository).
DOC_REF = re.compile(r"(?<![\w./-])((?:[\w.-]+/)*[\w.-]+\.(?:md|rst)\b|(?:docs|shared)/[\w./-]*[\w/])")


def lint_command() -> list[str]:
    tox = configparser.ConfigParser()
    tox.read(ROOT / "tox.ini")
    return shlex.split(tox["testenv:lint"]["commands"])


def test_tox_lint_names_only_existing_folders_and_passes():
    cmd = lint_command()
    assert cmd[:2] == ["ruff", "check"]
    missing = [p for p in cmd[2:] if not (ROOT / p).exists()]
    assert missing == [], f"tox.ini's lint env names missing paths {missing}"
    if shutil.which("ruff") is None:
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _scanned_files() -> list[Path]:
    out = []
    for name in SCANNED:
        path = ROOT / name
        files = [path] if path.is_file() else sorted(path.rglob("*"))  # a missing folder: no files
        out += [f for f in files if f.is_file() and f.suffix in {".py", ".md", ".toml", ".ini", ".csv", ""}
                and "__pycache__" not in f.parts and f.name != Path(__file__).name]
    return out


def test_every_referenced_document_is_in_the_repository():
    dangling = []
    for path in _scanned_files():
        for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for ref in DOC_REF.findall(line):
                if "://" in line and ref in line.split("://", 1)[1]:
                    continue  # part of a URL
                if not ((ROOT / ref).exists() or (path.parent / ref).exists()):
                    dangling.append(f"{path.relative_to(ROOT)}:{lineno}: {ref}")
    assert dangling == [], "references to files that are not in the repository:\n" + "\n".join(dangling)
