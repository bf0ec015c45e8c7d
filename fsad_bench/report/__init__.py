"""Reports from a results store: ``fsad-bench report``.

The modules import only downwards, in this order (the package itself imports nothing, so importing
one module loads only what it needs):

- ``stats``: significance tests (Wilcoxon, Holm, Friedman / Nemenyi);
- ``presentation``: method names, column order, reference method and curve axes, from the detectors'
  declarations and the protocol spec;
- ``configs``: which rows may share a table (one resolved configuration each, headed by what differs);
- ``tables``: long-form results -> :class:`~fsad_bench.report.tables.Table` (rows, mean ± seed std,
  p-value rows);
- ``export``: one row per ok cell (or per test image) as long-form CSV or Parquet, and the reader of
  the former for ``--from-csv``;
- ``text``: a mean with its seed spread, the lines that say what a statistic needs, foldable notes;
- ``render``: a table or grid as Markdown, LaTeX, HTML or CSV; ``Part``, one section of a report;
- ``figures``: the paper's figures and the critical-difference diagram (matplotlib);
- ``layouts``: one protocol in its paper layout (Tables 2-5, curves) with the statistics section;
- ``compare``: our cells beside the published numbers;
- ``gallery``: each method's worst false positives and negatives as thumbnails (HTML);
- ``html``: the self-contained HTML document (results first, run settings collapsed last);
- ``document``: a whole results folder's report in one format.
"""
