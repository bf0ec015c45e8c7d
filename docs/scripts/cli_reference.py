"""The CLI reference page, generated from the argument parser itself (``fsad_bench.cli.build_parser``).

mkdocs-gen-files runs this script at every ``mkdocs build`` (``plugins: gen-files`` in mkdocs.yml): it
appends one section per command (``fsad-bench``, ``fsad-bench run``, ..., ``fsad-bench data add``) to
``docs/reference/cli.md``: the description, the usage line and a table of every option with its help
and default. Nothing is copied by hand, so the page cannot drift from ``fsad-bench COMMAND --help``.
``tests/test_docs.py`` imports it to check that every option appears.
"""

from __future__ import annotations

import argparse
import html
from collections.abc import Iterator
from pathlib import Path

from fsad_bench.cli import build_parser

#: the page this appends to, relative to the docs folder (a committed stub: its introduction)
PAGE = (Path(__file__).resolve().parent / "../reference/cli.md").resolve().relative_to(
    Path(__file__).resolve().parents[1]).as_posix()
WIDTH = 80  # usage lines are wrapped at this width, whatever the terminal


def iter_parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ("fsad-bench",)
                 ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, str]]:
    """Every parser of the tree, depth first: (command path, parser, its one-line help)."""
    yield path, parser, ""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                for sub_path, sub_parser, sub_help in iter_parsers(sub, (*path, name)):
                    yield sub_path, sub_parser, sub_help or helps.get(name, "")


def _text(text: str | None) -> str:
    """Help text as Markdown table-cell text: HTML and the Markdown specials escaped, one line."""
    text = html.escape(" ".join((text or "").split()), quote=False)
    for char in "\\|*_[]`":
        text = text.replace(char, "\\" + char)
    return text


def _formatter(parser: argparse.ArgumentParser) -> argparse.HelpFormatter:
    return argparse.HelpFormatter(parser.prog, width=WIDTH, max_help_position=40)


def _invocation(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    return _formatter(parser)._format_action_invocation(action)


def _default(action: argparse.Action) -> str:
    if action.option_strings and action.default not in (None, False, [], argparse.SUPPRESS) \
            and action.nargs != 0:
        value = action.default
        if isinstance(value, list):
            value = ",".join(map(str, value))
        return f"`{value}`"
    return ""


def _usage(parser: argparse.ArgumentParser) -> str:
    formatter = _formatter(parser)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return formatter.format_help().strip()


def command_markdown(path: tuple[str, ...], parser: argparse.ArgumentParser, short_help: str) -> str:
    """One command's section: heading, description, usage, then a table per argument group."""
    lines = [f"{'#' * min(len(path) + 1, 4)} {' '.join(path)}", ""]
    about = parser.description or short_help
    if about:
        lines += [_text(about), ""]
    lines += ["```text", _usage(parser), "```", ""]
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if not isinstance(a, argparse._HelpAction)]
        if not actions:
            continue
        lines += [f"**{group.title}**", "", "| argument | meaning | default |", "|---|---|---|"]
        for action in actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action._choices_actions:
                    target = "-".join((*path, sub.dest)).replace(" ", "-")
                    lines.append(f"| [`{sub.dest}`](#{target}) | {_text(sub.help)} | |")
                continue
            lines.append(f"| `{_invocation(parser, action)}` | {_text(action.help)} | {_default(action)} |")
        lines.append("")
    return "\n".join(lines)


def cli_markdown(parser: argparse.ArgumentParser | None = None) -> str:
    """The whole generated part of the page."""
    parser = parser or build_parser()
    return "\n".join(command_markdown(path, p, h) for path, p, h in iter_parsers(parser))


def main() -> None:
    import mkdocs_gen_files

    with mkdocs_gen_files.open(PAGE, "a") as page:
        page.write("\n" + cli_markdown())
    mkdocs_gen_files.set_edit_path(PAGE, "scripts/cli_reference.py")


if __name__ in ("__main__", "<run_path>"):
    main()
