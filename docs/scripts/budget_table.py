"""The budgets page's table of every detector's settings per budget, generated from the detectors.

mkdocs-gen-files runs this script at every ``mkdocs build``: it resolves each registered detector at
each budget with the run's own resolver (``fsad_bench.config.resolve_method_config``, no ``--set``,
no protocol) and appends the image size, weights, backbone and the declared table to
``docs/reference/budgets.md``. A plugin installed where the docs are built shows up too.
"""

from __future__ import annotations

import warnings
from pathlib import Path

#: the page this appends to, relative to the docs folder
PAGE = (Path(__file__).resolve().parent / "../reference/budgets.md").resolve().relative_to(
    Path(__file__).resolve().parents[1]).as_posix()


def budget_markdown() -> str:
    from fsad_bench.budgets import BUDGETS
    from fsad_bench.config import resolve_method_config
    from fsad_bench.detectors.registry import available_detectors

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a broken plugin where the docs are built is not ours to document
        detectors = available_detectors()
    lines = ["| method | " + " | ".join(f"`{b}`" for b in BUDGETS) + " |",
             "|---|" + "---|" * len(BUDGETS)]
    details = []
    for name, cls in detectors.items():
        cells = []
        for budget in BUDGETS.values():
            resolved = resolve_method_config(budget, name)
            params = resolved.params
            what = [f"{resolved.img_size} px"]
            if "weights" in params:
                what.append(str(params["weights"]))
            if "backbone" in params:
                what.append(f"`{params['backbone']}`")
            if not resolved.budget_declared:
                what.append("(not declared: Config defaults)")
            cells.append(", ".join(what))
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
        if cls.budgets:
            details.append(f"**`{name}`** (`{cls.__module__}.{cls.__name__}.budgets`)\n")
            for budget, table in cls.budgets.items():
                values = ", ".join(f"`{k}={v!r}`" for k, v in table.items()) or "(none)"
                details.append(f"- `{budget}`: {values}")
            details.append("")
    return "\n".join(["", "## Every method at every budget", "",
                      "Generated from the detectors installed where this page was built (image size, "
                      "weights and backbone as a run resolves them without `--set`):", "", *lines, "",
                      "## The declared tables", "",
                      "What each detector declares in its `budgets` (before the protocol's "
                      "`[set.<budget>]`, `--weights` and `--set`):", "", *details])


def main() -> None:
    import mkdocs_gen_files

    with mkdocs_gen_files.open(PAGE, "a") as page:
        page.write(budget_markdown())


if __name__ in ("__main__", "<run_path>"):
    main()
