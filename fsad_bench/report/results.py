"""A results folder as a report reads it: the rows of its store and the store's own description of
each protocol and method (:class:`~fsad_bench.report.presentation.Presentation`). Nothing else: no
installed detector, no packaged spec."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fsad_bench.errors import UserError
from fsad_bench.report.presentation import Presentation
from fsad_bench.report.tables import long_rows
from fsad_bench.store import STORE_NAME, ResultStore


@dataclass
class Results:
    folder: Path
    cells: pd.DataFrame                      # every stored row (without the score and manifest blobs)
    presentations: dict[str, Presentation]   # protocol -> how it is shown

    def rows(self, metric: str, protocol: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(ok rows with ``metric`` as ``value``, the rows that are not ok), of one protocol or all."""
        cells = self.cells if protocol is None else self.cells[self.cells.protocol == protocol]
        return long_rows(cells, metric)

    def ok_rows_with_blobs(self, protocol: str | None = None) -> pd.DataFrame:
        """The ok rows of ``protocol`` (None: of all) with their stored test scores, split manifests,
        examples and galleries."""
        with ResultStore(self.folder, create=False) as store:
            df = store.dataframe(with_blobs=True)
        return df[((df.protocol == protocol) if protocol is not None else True) & (df.status == "ok")]

    def protocols(self) -> list[str]:
        """The folder's protocols in the paper's order: q1, q2, ... by number (Tables 2-5, then Figs. 7
        and 8), then the others (the K sweep of Fig. 6, one's own specs) by name."""
        def key(name: str) -> tuple[int, int, str]:
            numbered = re.fullmatch(r"q(\d+)", name)
            return (0, int(numbered.group(1)), name) if numbered else (1, 0, name)

        return sorted(self.cells.protocol.unique(), key=key)


def read_results(folder: str | Path, descriptions: dict[str, dict[str, dict]] | None = None) -> Results:
    """The folder's store and its description of every protocol and method it holds (``descriptions``:
    one made in memory for a store that lacks it, see :mod:`fsad_bench.upgrade`)."""
    folder = Path(folder)
    with ResultStore(folder, create=False) as store:  # missing, empty or no store: one line
        cells = store.dataframe()
        described = descriptions or store.descriptions()
    specs, methods = described.get("protocols", {}), described.get("methods", {})
    lacking = sorted(set(cells.protocol) - set(specs)) + sorted(set(cells.method) - set(methods))
    if lacking:
        raise UserError(f"results store {folder / STORE_NAME} does not describe {', '.join(lacking)} "
                        "(written by fsad-bench 0.1): 'fsad-bench report' describes such a folder once; use "
                        "it before reading the folder from Python")
    presentations = {p: Presentation.from_store(specs[p], {m: methods[m] for m in set(cells.method)})
                     for p in set(cells.protocol)}
    return Results(folder, cells, presentations)
