"""The documentation: every code block of the tutorials runs, the CLI help is complete plain text, the
generated CLI reference covers every option, the reference pages name every spec key and protocol,
and the site builds in strict mode.

Tutorials (``docs/tutorials/*.md``) are executed as a reader would follow them: the blocks of one page
in order, in one empty working folder, each bash block through ``bash -euo pipefail`` and each python
block with this interpreter, in an environment of its own:

* ``HOME``, ``FSAD_DATA`` and the XDG folders point into the test's temporary folder; ``FSAD_CACHE`` is
  the test session's (the embedded dataset is generated once); ``PYTHONPATH`` is unset;
* a throw-away virtual environment layered on this interpreter's packages comes first on ``PATH``
  (``python``, ``pip``, ``fsad-bench``), so ``pip install`` in a tutorial installs into it, never
  into the environment running the tests; pip works offline (``PIP_NO_INDEX``, no build isolation).

A block whose fence has ``title="path"`` (mkdocs-material shows it as the block's title) is a file the
reader saves: it is written to that path (python: also compiled; toml: also parsed). A toml block is
parsed with tomllib, a yaml block with PyYAML, a text block (output, a folder tree) is not code. A
block that truly cannot run here is preceded by ``<!-- docs-test: skip: why -->``; such blocks are
counted and their number is pinned below, so none is skipped silently.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import py_compile
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomllib

from fsad_bench.cli import build_parser
from fsad_bench.protocol import ProtocolSpec, load_protocol, packaged_protocols

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TUTORIALS = sorted((DOCS / "tutorials").glob("*.md"))
#: blocks marked ``<!-- docs-test: skip: ... -->``, per tutorial (each says why in its marker)
EXPECTED_SKIPS = {"docs/tutorials/cluster.md": 1}
RUNNABLE = {"bash", "python", "toml", "yaml"}
NOT_CODE = {"text"}
BLOCK_TIMEOUT_S = 300

_FENCE = re.compile(r"^```(?P<lang>[\w-]*)(?P<attrs>[^\n]*)\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)
_TITLE = re.compile(r'title="([^"]+)"')
_SKIP = re.compile(r"<!--\s*docs-test:\s*skip:\s*(?P<why>.+?)\s*-->\s*$")


@dataclass
class Block:
    lang: str
    body: str
    line: int
    title: str | None
    skip: str | None  # the reason given in the skip marker


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, in order (top-level fences only)."""
    text = path.read_text()
    out = []
    for m in _FENCE.finditer(text):
        before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = _SKIP.search(before)
        title = _TITLE.search(m["attrs"])
        out.append(Block(m["lang"], m["body"], text.count("\n", 0, m.start()) + 1,
                         title[1] if title else None, skip["why"] if skip else None))
    return out


# --- the reader's environment --------------------------------------------------------------------

def _site_dirs() -> list[str]:
    """Every site-packages folder this interpreter imports from (its own and the ones it inherits)."""
    return [p for p in sys.path if p.rstrip("/").endswith(("site-packages", "dist-packages"))]


def _layered_venv(folder: Path) -> Path:
    """A virtual environment without packages of its own that sees this interpreter's packages (a
    .pth file adds them as site folders, so editable installs keep working); its bin folder has
    python, and pip / fsad-bench / pytest / dask wrappers that run with it. Returns the bin folder."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    bindir = folder / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    lines = "".join(f"import site; site.addsitedir({d!r})\n" for d in _site_dirs())
    Path(purelib, "_docs_test_parent.pth").write_text(lines)
    for name, module in (("pip", "pip"), ("fsad-bench", "fsad_bench.cli"), ("pytest", "pytest"),
                         ("dask", "dask")):
        script = bindir / name
        script.write_text(f'#!/bin/sh\nexec "{python}" -m {module} "$@"\n')
        script.chmod(0o755)
    return bindir


@pytest.fixture
def reader_env(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """(working folder, environment) of a reader following a tutorial from an empty folder."""
    bindir = _layered_venv(tmp_path / "venv")
    home = tmp_path / "home"
    work = tmp_path / "work"
    for d in (home, work):
        d.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_", "VIRTUAL_ENV"))}
    env.update({
        "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local/share"),
        "FSAD_DATA": str(tmp_path / "data"), "FSAD_AUTO_ELPV": "0",
        "MPLCONFIGDIR": str(Path(os.environ["FSAD_CACHE"]).parent / "mplconfig"),  # font cache: once
        "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}", "VIRTUAL_ENV": str(bindir.parent),
        "PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_INPUT": "1", "NO_MKDOCS_2_WARNING": "1",
    })
    return work, env


def _run_block(block: Block, page: str, work: Path, env: dict[str, str]) -> None:
    where = f"{page}:{block.line}"
    if block.title:
        target = work / block.title
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block.body)
        if block.lang == "python":
            py_compile.compile(str(target), doraise=True)
        elif block.lang == "toml":
            tomllib.loads(block.body)
        return
    if block.lang == "toml":
        tomllib.loads(block.body)
        return
    if block.lang == "yaml":
        import yaml

        yaml.safe_load(block.body)
        return
    if block.lang == "bash":
        cmd = ["bash", "-euo", "pipefail", "-c", block.body]
    else:  # python: from a file, so that spawned worker processes can import the main module
        script = work.parent / f"block_{block.line}.py"
        script.write_text(block.body)
        cmd = [str(Path(env["VIRTUAL_ENV"]) / "bin" / "python"), str(script)]
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
    assert proc.returncode == 0, (f"{where}: the {block.lang} block exited {proc.returncode}\n--- block\n"
                                  f"{block.body}--- stdout\n{proc.stdout[-4000:]}--- stderr\n"
                                  f"{proc.stderr[-4000:]}")


@pytest.mark.parametrize("page", TUTORIALS, ids=[p.name for p in TUTORIALS])
def test_tutorial_runs_as_written(page: Path, reader_env):
    work, env = reader_env
    found = blocks(page)
    assert found, f"{page.name} has no code block"
    unknown = [f"{page.name}:{b.line}: ```{b.lang or '(no language)'}" for b in found
               if b.lang not in RUNNABLE | NOT_CODE]
    assert not unknown, "blocks the test cannot run; give each a language it knows:\n" + "\n".join(unknown)
    skipped = [b for b in found if b.skip]
    expected = EXPECTED_SKIPS.get(page.relative_to(ROOT).as_posix(), 0)
    assert len(skipped) == expected, (f"{page.name}: {len(skipped)} block(s) marked docs-test: skip, "
                                      f"expected {expected}: {[(b.line, b.skip) for b in skipped]}")
    timings = []
    for block in found:
        if block.lang in NOT_CODE or block.skip:
            continue
        start = time.perf_counter()
        _run_block(block, page.name, work, env)
        timings.append((block.line, round(time.perf_counter() - start, 1)))
    print(f"{page.name}: {len(timings)} blocks run, {len(skipped)} skipped; seconds per block (line, s): "
          f"{timings}")


def test_the_tutorials_run_real_commands():
    """The tutorials are not empty shells: bash blocks that call fsad-bench, in every page."""
    for page in TUTORIALS:
        runnable = [b for b in blocks(page) if b.lang == "bash" and not b.skip and "fsad-bench" in b.body]
        assert runnable, f"{page.name}: no executed fsad-bench command"


# --- the command line's help ---------------------------------------------------------------------

def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ("fsad-bench",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def test_every_option_has_plain_help_text():
    missing, raw = [], []
    for path, parser in _parsers(build_parser()):
        command = " ".join(path)
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    if not (choice.help or "").strip():
                        missing.append(f"{command} {choice.dest}")
                continue
            name = "/".join(action.option_strings) or action.dest
            if not (action.help or "").strip() or action.help == argparse.SUPPRESS:
                missing.append(f"{command} {name}")
            if "``" in (action.help or ""):
                raw.append(f"{command} {name}")
        text = parser.format_help()  # also catches a stray % in a help string
        if "``" in (parser.description or "") or "``" in text:
            raw.append(f"{command} (description or help text)")
    assert not missing, "options without help text:\n" + "\n".join(missing)
    assert not raw, "help with reST double backticks (argparse prints them as they are):\n" + "\n".join(raw)


def _cli_reference_module():
    spec = importlib.util.spec_from_file_location("cli_reference", DOCS / "scripts" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generated_cli_reference_has_every_command_and_option():
    text = _cli_reference_module().cli_markdown()
    for path, parser in _parsers(build_parser()):
        assert f" {' '.join(path)}\n" in text, f"no section for {' '.join(path)}"
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for option in action.option_strings:
                assert f"`{option}" in text or f", {option}" in text, f"{' '.join(path)} {option} missing"


# --- reference pages against the code ------------------------------------------------------------

def test_the_protocol_reference_names_every_spec_key_and_protocol():
    page = (ROOT / "docs/reference/protocols.md").read_text()
    for name, field in ProtocolSpec.model_fields.items():
        key = field.alias or name
        assert f"`{key}`" in page or f"`[{key}]`" in page or f"`[{key}.<budget>]`" in page, \
            f"spec key {key!r} is not in docs/reference/protocols.md"
    for name in packaged_protocols():
        assert f"**{name}**" in page, f"protocol {name} is not described in docs/reference/protocols.md"


def test_the_protocol_reference_example_spec_loads(tmp_path):
    loaded = []
    for block in blocks(ROOT / "docs/reference/protocols.md"):
        if block.lang == "toml" and "split =" in block.body:
            spec_file = tmp_path / "spec.toml"
            spec_file.write_text(block.body)
            loaded.append(load_protocol(str(spec_file)))
    assert loaded, "docs/reference/protocols.md has no example spec (a ```toml block with split =)"
    assert all(spec.methods and spec.settings for spec in loaded)


# --- the site ------------------------------------------------------------------------------------

def test_the_dev_extra_includes_the_docs_extra():
    """CI installs .[dev] and builds the site: every docs requirement must be in dev."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["docs"] and set(extras["docs"]) <= set(extras["dev"])


def test_the_docs_build_in_strict_mode(tmp_path):
    """``mkdocs build --strict``: a broken link, a page missing from the nav, a docstring mkdocstrings
    cannot render is an error. (.ci/run builds it too, before the tests.)"""
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]'; the dev extra includes it)")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                           str(tmp_path / "site")], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    cli = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    assert "fsad-bench data add" in cli and "--no-progress" in cli  # the generated part is there
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    assert "check_detector" in api and "ProtocolSpec" in api and ":class:" not in api

