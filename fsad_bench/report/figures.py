"""Figures of the paper from our results (matplotlib, PNG and PDF, readable in print).

Every figure names the budget its numbers were made with in its title or subtitle (``budget``: the
line of :func:`~fsad_bench.report.presentation.budget_note`), so a figure copied out of a report still
says whether it is comparable with the paper."""

from __future__ import annotations

import base64
import hashlib
import io
import sys
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: reports run on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.metrics import f1_score  # noqa: E402

from fsad_bench.paths import cache_dir  # noqa: E402
from fsad_bench.report.presentation import Presentation  # noqa: E402
from fsad_bench.report.stats import RankTest  # noqa: E402
from fsad_bench.report.tables import Table  # noqa: E402

X_LABELS = {"n_anomaly": "number of labelled anomalies", "contamination": "contamination rate",
            "topk_ratio": "K (fraction of patches)"}


def curve_figure(frame: pd.DataFrame, x: str, title: str, out_dir: Path, stem: str, spec: Presentation,
                 budget: str) -> list[Path]:
    """One panel per dataset: mean AUC-ROC vs the setting, one line per method (``spec``'s order and
    names), seed std as error bars (Figs. 6-8). Returns the PNG and PDF paths."""
    datasets = sorted(frame.dataset.unique())
    methods = spec.order(frame.method.unique())
    cols = min(4, len(datasets))
    rows = -(-len(datasets) // cols)
    width = max(3.6 * cols, 5.5)
    fig, axes = plt.subplots(rows, cols, figsize=(width, 2.9 * rows + 0.8), squeeze=False)
    for ax, dataset in zip(axes.flat, datasets):
        d = frame[frame.dataset == dataset]
        for m in methods:
            g = d[d.method == m].groupby("x").value
            if g.ngroups:
                ax.errorbar(g.mean().index, g.mean().values, yerr=g.std(ddof=0).values, marker="o",
                            capsize=3, label=spec.name(m))
        ax.set_title(dataset, fontsize=11)
        ax.set_xlabel(X_LABELS.get(x, x), fontsize=9)
        ax.set_ylabel("AUC-ROC", fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(datasets):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, frameon=False)
    fig.suptitle(textwrap.fill(title, int(width * 9)) + "\n" + textwrap.fill(budget, int(width * 10)),
                 fontsize=10.5)
    fig.tight_layout(rect=(0, 0.08, 1, 0.93))
    return _save(fig, out_dir, stem)


def metric_label(metric: str) -> str:
    """'auc_roc' -> 'AUC-ROC', 'pixel_auc_per_image' -> 'PIXEL-AUC-PER-IMAGE' (as the table captions)."""
    return metric.replace("_", "-").upper()


def table_figure(table: Table, out_dir: Path, stem: str, title: str, metric: str, budget: str) -> list[Path]:
    """A table's numbers as bars: one group per dataset (a multi-category dataset by its average row,
    the mean over its categories), one bar per method in the table's column order, the mean over
    seeds as the bar and the seed spread (the table's ±) as its error bar. Returns PNG and PDF."""
    averaged = {r.group for r in table.rows if r.is_average}
    rows = [r for r in table.rows if r.is_average or r.group not in averaged]
    labels = [r.group or r.label for r in rows]
    methods = table.methods
    width = 0.8 / max(len(methods), 1)
    fig_width = min(max(6.0, 1.2 + len(rows) * (0.22 * len(methods) + 0.45)), 18.0)
    fig, ax = plt.subplots(figsize=(fig_width, 4.4))
    x = np.arange(len(rows))
    for i, m in enumerate(methods):
        means = np.array([r.cells[m][0] if m in r.cells else np.nan for r in rows])
        stds = np.array([r.cells[m][1] if m in r.cells else np.nan for r in rows])
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, means, width, yerr=stds, capsize=2,
               label=table.names.get(m, m), error_kw={"elinewidth": 0.9})
    ax.axhline(0.5, color="0.4", linestyle="--", linewidth=0.8)  # chance level of an AUC
    ax.set_xticks(x, labels, rotation=30 if len(rows) > 6 else 0, ha="right" if len(rows) > 6 else "center",
                  fontsize=9)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"{metric_label(metric)} (mean over seeds)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=9, ncol=min(len(methods), 6), loc="lower center", bbox_to_anchor=(0.5, 1.0),
              frameon=False)
    ax.set_title(textwrap.fill(f"{title}: per-dataset {metric_label(metric)}, error bars = seed spread "
                               "(std over seeds); dashed = chance", int(fig_width * 11)) + "\n"
                 + textwrap.fill(budget, int(fig_width * 11)), fontsize=10, pad=28)
    fig.tight_layout()
    return _save(fig, out_dir, stem)


def _decode_png(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def localisation_f1_curve(df: pd.DataFrame, out_dir: Path, spec: Presentation, budget: str,
                          stem: str = "q3_auc_vs_f1", n_thresholds: int = 50) -> list[Path]:
    """Fig. 4: pixel AUC of the *detected* true anomalies vs image-level F1, over cut-off thresholds.

    Thresholds are quantiles (0 .. 0.98) of each cell's test scores, so curves of cells can be
    averaged point by point (over categories and seeds). Needs the store's blobs (scores, labels) and
    the per-anomaly pixel AUCs of q3.
    """
    quantiles = np.linspace(0.0, 0.98, n_thresholds)
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for m in spec.order(df.method.unique()):
        f1s, aucs = [], []
        for r in df[df.method == m].itertuples():
            scores, labels = np.asarray(r.scores["scores"]), np.asarray(r.scores["labels"])
            each = np.array([np.nan if v is None else v for v in r.metrics["pixel_auc_each"]], float)
            anomaly_scores = scores[labels == 1]
            f1_row, auc_row = [], []
            for t in np.quantile(scores, quantiles):
                pred = scores >= t
                f1_row.append(f1_score(labels, pred, zero_division=0))
                hit = each[(anomaly_scores >= t) & ~np.isnan(each)]
                auc_row.append(hit.mean() if hit.size else np.nan)
            f1s.append(f1_row)
            aucs.append(auc_row)
        ax.plot(np.nanmean(f1s, 0), np.nanmean(aucs, 0), marker=".", label=spec.name(m))
    ax.set_xlabel("image-level F1 (detection)")
    ax.set_ylabel("pixel AUC-ROC of detected anomalies")
    ax.set_title("AUC-ROC vs F1 in anomaly localisation\n" + textwrap.fill(budget, 60), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    return _save(fig, out_dir, stem)


def heatmap_panels(df: pd.DataFrame, out_dir: Path, spec: Presentation, budget: str, stem: str = "q3_heatmaps"
                   ) -> list[Path]:
    """Fig. 5: for each category, one example per defect class: image / ground truth / heat map per
    method (the first seed's cell of each method), with a colour bar of the heat maps' scale."""
    first = df.sort_values("seed").drop_duplicates(["dataset", "category", "method"])
    methods = spec.order(first.method.unique())
    columns = []  # (category, class, {method: example})
    for (_, category), g in first.groupby(["dataset", "category"], sort=True):
        per_method = {r.method: {e["class"]: e for e in r.scores.get("examples", [])} for r in g.itertuples()}
        classes = sorted({c for ex in per_method.values() for c in ex})
        columns += [(category, c, {m: per_method.get(m, {}).get(c) for m in methods}) for c in classes]
    if not columns:
        return []
    rows = 2 + len(methods)
    # constrained layout leaves room for the colour bar beside the heat-map rows
    fig, axes = plt.subplots(rows, len(columns), figsize=(1.3 * len(columns) + 2.4, 1.3 * rows + 0.9),
                             squeeze=False, layout="constrained")
    for j, (category, cls, ex) in enumerate(columns):
        some = next(e for e in ex.values() if e)
        axes[0, j].imshow(_decode_png(some["image"]))
        axes[1, j].imshow(_decode_png(some["mask"]), cmap="gray")
        axes[0, j].set_title(f"{category}\n{cls}", fontsize=8)
        for i, m in enumerate(methods):
            if ex[m]:
                axes[2 + i, j].imshow(_decode_png(ex[m]["image"]))
                axes[2 + i, j].imshow(_decode_png(ex[m]["map"]), cmap="jet", alpha=0.5, vmin=0, vmax=255)
    for i, label in enumerate(["image", "ground truth"] + [spec.name(m) for m in methods]):
        axes[i, 0].set_ylabel(label, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    # the stored maps are the detectors' explain() maps in [0, 1], drawn with jet over the image
    # beside the heat-map rows; attached to every panel so the columns stay aligned
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap="jet"), ax=axes.ravel().tolist(),
                       shrink=max(0.3, 0.95 * len(methods) / rows), anchor=(0.0, 0.0), aspect=30)
    bar.set_label("heat map (explain() value, 0-1)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    fig.suptitle("Anomaly heat maps\n" + textwrap.fill(budget, max(40, int(13 * len(columns)))), fontsize=9)
    return _save(fig, out_dir, stem)


def cd_diagram(test: RankTest, out_dir: Path, stem: str, title: str, names: dict[str, str], budget: str
               ) -> list[Path]:
    """Critical-difference diagram (scikit-posthocs): average ranks on the axis, methods that the
    Nemenyi test cannot tell apart joined by a bar."""
    import scikit_posthocs as sp

    ranks = {names.get(m, m): r for m, r in test.average_ranks.items()}
    sig = test.posthoc.rename(index=lambda m: names.get(m, m), columns=lambda m: names.get(m, m))
    fig, ax = plt.subplots(figsize=(6.5, 1.6 + 0.3 * len(ranks)))
    # the CD value goes in the title: the library's own CD bar is drawn over the tick labels
    sp.critical_difference_diagram(ranks, sig, ax=ax, alpha=test.alpha, label_props={"fontsize": 10})
    ax.set_title(textwrap.fill(title, 70) + f"\naverage rank (1 = best); bars join methods the Nemenyi test "
                 f"cannot separate;\ncritical difference {test.critical_difference:.2f} ranks at alpha "
                 f"{test.alpha}\n{textwrap.fill(budget, 80)}", fontsize=9.5, pad=22)
    fig.tight_layout()
    return _save(fig, out_dir, stem)


def _save(fig: plt.Figure, out_dir: Path, stem: str) -> list[Path]:
    """``out_dir/stem.png`` and ``.pdf``; where ``out_dir`` cannot be written (a read-only results
    folder), the same files in :func:`fallback_figures_dir` instead, said once on stderr."""
    try:
        paths = _write(fig, out_dir, stem)
    except OSError as exc:
        other = fallback_figures_dir(out_dir)
        if other not in _SAID:
            _SAID.add(other)
            print(f"{out_dir} cannot be written ({exc.strerror or exc}): the report's figures go to {other}",
                  file=sys.stderr)
        paths = _write(fig, other, stem)
    plt.close(fig)
    return paths


def _write(fig: plt.Figure, out_dir: Path, stem: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.pdf"]
    for p in paths:
        fig.savefig(p, dpi=150)
    return paths


def fallback_figures_dir(out_dir: Path) -> Path:
    """This user's cache folder for the figures of ``out_dir``, named after it (one per folder)."""
    digest = hashlib.sha256(str(out_dir.resolve()).encode()).hexdigest()[:12]
    return cache_dir() / "report-figures" / f"{out_dir.resolve().parent.name}-{digest}"


_SAID: set[Path] = set()  # fallback folders already announced in this process
