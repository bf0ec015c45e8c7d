"""The results store: one SQLite file per output folder, one row per cell key.

The driver is the only writer. Each finished cell is committed at once, so a crash loses at most
the cells that were running. Rows with status 'ok' or 'skipped' are not rerun; 'failed' rows are
retried and overwritten.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

STORE_NAME = "results.sqlite"

_COLUMNS = {
    "key": "TEXT PRIMARY KEY", "protocol": "TEXT", "dataset": "TEXT", "category": "TEXT",
    "method": "TEXT", "seed": "INTEGER", "setting": "TEXT", "budget": "TEXT", "img_size": "INTEGER",
    "status": "TEXT", "error": "TEXT", "auc_roc": "REAL", "auc_pr": "REAL", "metrics": "TEXT",
    "manifest_hash": "TEXT", "manifest": "TEXT", "scores": "TEXT", "wall_s": "REAL",
    "peak_mem_mb": "REAL", "device": "TEXT", "weights": "TEXT", "params": "TEXT", "info": "TEXT",
    "code_version": "TEXT", "finished_at": "TEXT",
}
_JSON = {"setting", "metrics", "manifest", "scores", "params", "info"}


@dataclass
class CellResult:
    """Everything recorded about one cell (metrics, provenance, status)."""

    key: str
    protocol: str
    dataset: str
    category: str
    method: str
    seed: int
    setting: dict
    budget: str
    img_size: int
    status: str                      # "ok", "failed" or "skipped" (setting impossible on this data)
    error: str = ""
    auc_roc: float | None = None
    auc_pr: float | None = None
    metrics: dict = field(default_factory=dict)
    manifest_hash: str = ""
    manifest: dict = field(default_factory=dict)
    scores: dict = field(default_factory=dict)  # {"scores": [...], "labels": [...]} of the test set
    wall_s: float = 0.0
    peak_mem_mb: float | None = None
    device: str = ""
    weights: str = ""
    params: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    code_version: str = ""
    finished_at: str = ""
    user_error: bool = False         # bad input (data), not stored: drives the exit status


class ResultStore:
    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / STORE_NAME
        self.con = sqlite3.connect(self.path)
        self.con.execute("PRAGMA journal_mode=WAL")
        cols = ", ".join(f"{k} {t}" for k, t in _COLUMNS.items())
        self.con.execute(f"CREATE TABLE IF NOT EXISTS cells ({cols})")
        self.con.commit()

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def done_keys(self) -> set[str]:
        """Keys a rerun skips: finished ('ok') and impossible ('skipped') cells."""
        return {k for (k,) in self.con.execute("SELECT key FROM cells WHERE status IN ('ok', 'skipped')")}

    def put(self, result: CellResult) -> None:
        row = {k: v for k, v in asdict(result).items() if k in _COLUMNS}
        for k in _JSON:
            row[k] = json.dumps(row[k])
        names = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self.con:  # one transaction per cell: committed before the next one starts
            self.con.execute(f"INSERT OR REPLACE INTO cells ({names}) VALUES ({marks})", list(row.values()))

    def dataframe(self, with_blobs: bool = False) -> pd.DataFrame:
        cols = [c for c in _COLUMNS if with_blobs or c not in {"scores", "manifest"}]
        df = pd.read_sql_query(f"SELECT {', '.join(cols)} FROM cells", self.con)
        for k in _JSON & set(cols):
            df[k] = df[k].map(lambda s: json.loads(s) if s else {})
        return df

    def get(self, key: str) -> dict[str, Any] | None:
        df = pd.read_sql_query("SELECT * FROM cells WHERE key = ?", self.con, params=[key])
        if df.empty:
            return None
        row = df.iloc[0].to_dict()
        for k in _JSON:
            row[k] = json.loads(row[k]) if row[k] else {}
        return row
