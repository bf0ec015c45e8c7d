"""Figures of the paper from our results (matplotlib, PNG and PDF, readable in print)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: reports run on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from fsad_bench.report import METHOD_DISPLAY, _order_methods  # noqa: E402

X_LABELS = {"n_anomaly": "number of labelled anomalies", "contamination": "contamination rate",
            "topk_ratio": "K (fraction of patches)"}


def curve_figure(frame: pd.DataFrame, x: str, title: str, out_dir: Path, stem: str) -> list[Path]:
    """One panel per dataset: mean AUC-ROC vs the setting, one line per method, seed std as error
    bars (Figs. 6-8). Returns the PNG and PDF paths."""
    datasets = sorted(frame.dataset.unique())
    methods = _order_methods(sorted(frame.method.unique()))
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
                            capsize=3, label=METHOD_DISPLAY.get(m, m))
        ax.set_title(dataset, fontsize=11)
        ax.set_xlabel(X_LABELS.get(x, x), fontsize=9)
        ax.set_ylabel("AUC-ROC", fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(datasets):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, frameon=False)
    fig.suptitle(textwrap.fill(title, int(width * 9)), fontsize=11)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.pdf"]
    for p in paths:
        fig.savefig(p, dpi=150)
    plt.close(fig)
    return paths
