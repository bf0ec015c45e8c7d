"""The results store: one SQLite file per output folder, one row per cell key.

The driver is the only writer. Each finished cell is committed at once, so a crash loses at most
the cells that were running. Rows with status 'ok' or 'skipped' are not rerun; 'failed' rows are
retried and overwritten.

Faults are never silent. Opening an existing store runs ``PRAGMA integrity_check``; a file that is
empty (0 bytes), not a database, a corrupt one, another program's database (no ``cells`` table), a
row whose JSON cannot be decoded or an 'ok' row without a finite AUC is a one-line
:class:`StoreError` (exit 2), never "already finished" and never a new store (``run`` refuses an
empty file too: see :class:`ResultStore`). Reports and dry runs open a store with ``create=False``,
which reads it without changing it. A new store is built under a temporary name and linked into
place, so a reader of a run that is just starting never meets a half-made (0-byte) file. A store
locked by another process is waited for (``BUSY_TIMEOUT_S``). Every write checks that the file at the
store's path is still the one that was opened (device and inode) and that the row count did not drop,
so a store that is deleted, replaced or truncated during a run stops the run. A read-only folder
opens read-only (reports work; a run refuses with one line).

The store describes itself: beside the ``cells`` table (one :class:`CellResult` per row; the columns
are the dataclass's fields), ``protocols`` holds each protocol's resolved spec as the run used it and
``methods`` each method's report metadata (display name, paper column, weights notes), written at
run time. A report reads these, never the installed detectors or the packaged specs, so a folder
reports the same on another machine with other plugins installed. Stores written before these tables
existed are described once by :mod:`fsad_bench.upgrade`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
import tempfile
import threading
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd

from fsad_bench.errors import UserError

STORE_NAME = "results.sqlite"
BUSY_TIMEOUT_S = 30.0

class StoreError(UserError):
    """The results store is unreadable, corrupt, locked, full, read-only or gone (one line, exit 2)."""


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
    data_fingerprint: str = ""       # content fingerprint of the category's files the cell read
    detector_target: str = ""        # "module:Class" the method name resolved to
    detector_dist: str = ""          # distribution that provides it ("unregistered" for a bare module)
    detector_version: str = ""
    detector_source: str = ""        # sha256 of the detector's source modules
    #: why the result is suspect though it ran (e.g. {"flag": "diverged", "reason": ...}); reports mark it
    flags: list = field(default_factory=list)
    #: the row's configuration (:mod:`fsad_bench.configuration`): rows of one id are seeds of one
    #: experiment, and a report table pools only rows of one id per method
    config_id: str = ""
    user_error: bool = False         # bad input (data), not stored: drives the exit status


_NOT_STORED = {"user_error"}
_SQL_TYPES = {str: "TEXT", int: "INTEGER", float: "REAL", dict: "TEXT", list: "TEXT"}


def _sql_type(annotation: Any) -> str:
    base = next(t for t in (typing.get_args(annotation) or (annotation,)) if t is not type(None))
    return _SQL_TYPES[typing.get_origin(base) or base]


def _columns() -> dict[str, str]:
    """Column -> SQL type, from :class:`CellResult` (the one row type); a store made before a column
    existed gets it added on open (:meth:`ResultStore._migrate`)."""
    hints = typing.get_type_hints(CellResult)
    out = {f.name: _sql_type(hints[f.name]) for f in fields(CellResult) if f.name not in _NOT_STORED}
    out["key"] += " PRIMARY KEY"
    return out


_COLUMNS = _columns()
_HINTS = typing.get_type_hints(CellResult)
#: columns holding JSON (dicts and lists); a list column reads as [] when empty, the others as {}
_JSON = {name for name in _COLUMNS if _HINTS[name] in (dict, list)}
_JSON_LISTS = {name for name in _JSON if _HINTS[name] is list}
#: the tables a store describes itself with: name -> JSON (see the module docstring)
_DESCRIPTIONS = ("protocols", "methods")


def _create_tables(con: sqlite3.Connection) -> None:
    cols = ", ".join(f"{k} {t}" for k, t in _COLUMNS.items())
    con.execute(f"CREATE TABLE IF NOT EXISTS cells ({cols})")
    for table in _DESCRIPTIONS:
        con.execute(f"CREATE TABLE IF NOT EXISTS {table} (name TEXT PRIMARY KEY, json TEXT)")
    con.commit()


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def check_store_file(path: Path, must_exist: bool = True) -> None:
    """StoreError (one line) when ``path`` cannot be a results store: missing (with ``must_exist``),
    not a file, or empty (0 bytes). What is inside a non-empty file is checked on open."""
    if not path.exists():
        if must_exist:
            raise StoreError(f"no results store at {path}; run 'fsad-bench run --out {path.parent}' first")
        return
    if not path.is_file():
        raise StoreError(f"{path} is not a file: not a results store; move it away or choose another --out")
    if path.stat().st_size == 0:
        raise StoreError(f"results store {path} is empty (0 bytes): not a results store (a failed copy, "
                         "sync or disk leaves such a file); restore it from a backup, or delete it and rerun "
                         "to compute every cell into a new store")


def _writable(folder: Path, path: Path) -> bool:
    return os.access(folder, os.W_OK) and (not path.exists() or os.access(path, os.W_OK))


def check_store(folder: str | Path, check_done: bool = True) -> None:
    """What a run would refuse about the results store of ``folder``, checked without writing anything
    (a run and its dry run both call this first): an existing ``results.sqlite`` that is empty, no
    SQLite database, damaged, another program's database or read-only, and (``check_done``, a run
    that skips finished cells) a finished row it could not trust (:meth:`ResultStore.done_keys`).
    No store yet is fine."""
    folder = Path(folder)
    path = folder / STORE_NAME
    check_store_file(path, must_exist=False)
    if not path.exists():
        return
    if not _writable(folder, path):
        raise StoreError(f"results store {path} is read-only; choose a writable --out")
    with ResultStore(folder, create=False) as store:  # integrity_check and the cells table
        if check_done:
            store.done_keys()


class ResultStore:
    """``readonly``: None = read-only only when the folder (or the file) cannot be written.

    ``create`` (a run): the folder, file and tables are made when missing and an older store gets the
    columns it lacks. ``create=False`` (a report, a dry run, ``load_results``): the store must exist
    and is read as it is: no folder, file, table or column is made and the journal mode is left
    alone, so reading never modifies it (:meth:`describe` may add its two description tables, see
    :mod:`fsad_bench.upgrade`). Either way a file that is empty (0 bytes), not an SQLite database, or
    a database without a ``cells`` table is refused with one line, never taken for an empty store:
    an empty file is what a failed copy or sync leaves, and writing a new store into it could replace
    the results it stands for.
    """

    def __init__(self, folder: str | Path, readonly: bool | None = None,
                 busy_timeout_s: float = BUSY_TIMEOUT_S, create: bool = True) -> None:
        self.folder = Path(folder)
        self.path = self.folder / STORE_NAME
        self.busy_timeout_s = busy_timeout_s
        self._copy: Path | None = None  # a private copy of a read-only store that has a WAL to replay
        check_store_file(self.path, must_exist=not create)
        existed = self.path.exists()
        self.readonly = (existed and not _writable(self.folder, self.path)) if readonly is None else readonly
        if self.readonly:
            self.con = self._connect_readonly()
        elif not create:
            with self._errors("open"):  # mode=rw: never creates the file (a reading connection)
                self.con = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=rw", uri=True,
                                           timeout=busy_timeout_s)
        else:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create results folder {self.folder}: {exc.strerror or exc}; "
                                 "choose another --out") from None
            with self._errors("create"):
                if not existed:
                    self._create_file()
            with self._errors("open"):
                self.con = sqlite3.connect(self.path, timeout=busy_timeout_s)
        with self._errors("open"):
            self.con.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            if existed:
                self._check_integrity(self.con)
                self._check_cells_table(self.con)
            if create and not self.readonly:
                self.con.execute("PRAGMA journal_mode=WAL")
                _create_tables(self.con)
                self._migrate()
            self.columns = [r[1] for r in self.con.execute("PRAGMA table_info(cells)")]
            if not self.columns:
                raise StoreError(f"{self.path} is a database without a 'cells' table: not a results store; "
                                 "move it away or choose another --out")
            self._rows = self._count()
        self._identity = self._file_identity()

    def _create_file(self) -> None:
        """Make a new store with its tables under a temporary name, then link it into place: the path
        never holds a half-made (0-byte) database that a reader polling it, or a run killed while it
        was made, would have to refuse as empty. A store another process linked first is kept."""
        tmp = self.folder / f".{STORE_NAME}.{os.getpid()}.{threading.get_ident()}.new"
        try:
            con = sqlite3.connect(tmp)
            try:
                _create_tables(con)
            finally:
                con.close()
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                pass
            except OSError:  # a file system without hard links: a rename, which cannot refuse a race
                if not self.path.exists():
                    os.replace(tmp, self.path)
        except OSError as exc:
            raise StoreError(f"cannot create results store {self.path}: {exc.strerror or exc}; "
                             "check the folder and the disk") from None
        finally:
            tmp.unlink(missing_ok=True)

    def _check_cells_table(self, con: sqlite3.Connection) -> None:
        """StoreError when an existing database has tables but no ``cells`` table: another program's
        database, into which a run must not write its own tables."""
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and "cells" not in tables:
            raise StoreError(f"{self.path} is a database without a 'cells' table (it has "
                             f"{', '.join(sorted(tables)[:3])}): not a results store; move it away or choose "
                             "another --out")

    # --- opening ----------------------------------------------------------------------------------

    def _connect_readonly(self) -> sqlite3.Connection:
        wal = self.path.with_name(self.path.name + "-wal")
        uri = self.path.resolve().as_uri()
        try:
            if os.access(self.folder, os.W_OK):
                return sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=self.busy_timeout_s)
            if not wal.exists() or wal.stat().st_size == 0:
                # nothing to replay and no -shm can be made here: read the file as it is
                return sqlite3.connect(f"{uri}?immutable=1", uri=True)
            # committed rows still in the write-ahead log (a killed writer): replay them on a private copy,
            # as 'immutable' would silently drop them
            self._copy = Path(tempfile.mkdtemp(prefix="fsad-store-"))
            for src in (self.path, wal):
                shutil.copy2(src, self._copy / src.name)
            return sqlite3.connect(f"{(self._copy / self.path.name).as_uri()}?mode=ro", uri=True)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open results store {self.path} read-only: {_one_line(exc)}") from None

    def _check_integrity(self, con: sqlite3.Connection) -> None:
        verdict = self._verdict(con)
        if verdict != "ok":
            raise StoreError(f"results store {self.path} is damaged (PRAGMA integrity_check: {verdict}); "
                             "restore it from a backup, or move it away and rerun to recompute every cell")

    @staticmethod
    def _verdict(con: sqlite3.Connection) -> str:
        try:
            rows = [r[0] for r in con.execute("PRAGMA integrity_check")]
        except sqlite3.DatabaseError as exc:
            return _one_line(exc)
        return _one_line("; ".join(rows[:3]) + (f"; ... ({len(rows)} problems)" if len(rows) > 3 else ""))

    def _migrate(self) -> None:
        have = {r[1] for r in self.con.execute("PRAGMA table_info(cells)")}
        for name, kind in _COLUMNS.items():
            if name not in have:
                self.con.execute(f"ALTER TABLE cells ADD COLUMN {name} {kind}")
        self.con.commit()

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """sqlite3 errors as one line that says what happened to the store and what to do."""
        try:
            yield
        except sqlite3.Error as exc:
            msg = _one_line(exc)
            low = msg.lower()
            # text we wrote is always UTF-8: text that is not is damaged bytes (the message would
            # repeat them, so it stops before them)
            undecodable = "could not decode" in low
            if undecodable:
                msg = msg.split(" with text ", 1)[0]
            if "locked" in low or "busy" in low:
                why = (f"it is locked by another process (waited {self.busy_timeout_s:g} s); let the other "
                       "fsad-bench run finish, or use another --out")
            elif "full" in low:
                why = "the disk is full; free space and rerun (cells already stored are kept)"
            elif "readonly" in low or "read-only" in low:
                why = "it is read-only; choose a writable --out"
            elif (isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)) \
                    or "malformed" in low or "not a database" in low or undecodable:
                con = getattr(self, "con", None)
                verdict = self._verdict(con) if con is not None else msg
                why = (f"it is damaged ({'a stored value is not UTF-8 text; ' if undecodable else ''}"
                       f"PRAGMA integrity_check: {verdict}); restore it from a backup, "
                       "or move it away and rerun to recompute every cell")
            else:
                why = "check the folder and the disk"
            raise StoreError(f"cannot {action} results store {self.path}: {msg}; {why}") from None

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def _count(self) -> int:
        return self.con.execute("SELECT count(*) FROM cells").fetchone()[0]

    def close(self) -> None:
        self.con.close()
        if self._copy is not None:
            shutil.rmtree(self._copy, ignore_errors=True)
            self._copy = None

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading ----------------------------------------------------------------------------------

    def _select(self, wanted: list[str]) -> str:
        """Column list for SELECT; columns an older store lacks read as empty text."""
        return ", ".join(c if c in self.columns else f"'' AS {c}" for c in wanted)

    def _decode(self, key: str, column: str, text: Any) -> Any:
        if text is None or text == "":
            return [] if column in _JSON_LISTS else {}
        try:
            return json.loads(text)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"results store {self.path}: row {key} has an undecodable '{column}' ({exc}); "
                             f"PRAGMA integrity_check: {self._verdict(self.con)}; move the store away, or "
                             "rerun with --rerun all to recompute the grid's cells") from None

    def done_keys(self) -> set[str]:
        """Keys a rerun skips: finished ('ok') and impossible ('skipped') cells. Every such row is
        decoded first: one that cannot be read is an error, never a finished cell."""
        done = set()
        with self._errors("read"):
            rows = self.con.execute(f"SELECT key, status, auc_roc, {self._select(sorted(_JSON))} FROM cells "
                                    "WHERE status IN ('ok', 'skipped')").fetchall()
        for key, status, auc, *blobs in rows:
            for column, text in zip(sorted(_JSON), blobs):
                self._decode(key, column, text)
            if status == "ok" and not (isinstance(auc, float) and math.isfinite(auc)):
                raise StoreError(f"results store {self.path}: row {key} is 'ok' without a finite AUC "
                                 f"({auc!r}); move the store away, or rerun with --rerun all")
            done.add(key)
        return done

    def dataframe(self, with_blobs: bool = False) -> pd.DataFrame:
        cols = [c for c in _COLUMNS if with_blobs or c not in {"scores", "manifest"}]
        with self._errors("read"):
            df = pd.read_sql_query(f"SELECT {self._select(cols)} FROM cells", self.con)
        for k in _JSON & set(cols):
            df[k] = [self._decode(key, k, s) for key, s in zip(df["key"], df[k])]
        return df

    def descriptions(self) -> dict[str, dict[str, dict]]:
        """What the store says about its protocols and methods: ``{"protocols": {name: resolved spec},
        "methods": {name: report metadata}}``; an old store without these tables reads them empty."""
        tables = {r[0] for r in self.con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        out: dict[str, dict[str, dict]] = {}
        for table in _DESCRIPTIONS:
            rows = self.con.execute(f"SELECT name, json FROM {table}").fetchall() if table in tables else []
            out[table] = {name: self._decode(name, table, text) for name, text in rows}
        return out

    def describe(self, protocols: dict[str, dict], methods: dict[str, dict]) -> None:
        """Record the resolved spec of each protocol and the report metadata of each method, replacing
        what an earlier run recorded under the same name (the report shows a folder as its latest run
        described it)."""
        if self.readonly:
            raise StoreError(f"results store {self.path} is read-only; choose a writable --out")
        self.check_same_file()
        with self._errors("describe the runs in"), self.con:
            for table in _DESCRIPTIONS:  # a store of fsad-bench 0.1 opened to be read lacks them
                self.con.execute(f"CREATE TABLE IF NOT EXISTS {table} (name TEXT PRIMARY KEY, json TEXT)")
            for table, items in (("protocols", protocols), ("methods", methods)):
                self.con.executemany(f"INSERT OR REPLACE INTO {table} (name, json) VALUES (?, ?)",
                                     [(name, json.dumps(v, sort_keys=True)) for name, v in items.items()])

    def get(self, key: str) -> dict[str, Any] | None:
        with self._errors("read"):
            df = pd.read_sql_query(f"SELECT {self._select(list(_COLUMNS))} FROM cells WHERE key = ?",
                                   self.con, params=[key])
        if df.empty:
            return None
        row = df.iloc[0].to_dict()
        for k in _JSON:
            row[k] = self._decode(key, k, row[k])
        return row

    # --- writing ----------------------------------------------------------------------------------

    def check_same_file(self) -> None:
        """StoreError if the file at the store's path is gone or is another file than was opened."""
        now = self._file_identity()
        if now is None:
            raise StoreError(f"results store {self.path} disappeared during the run; cells finished after "
                             "that were not stored: restore the folder and rerun")
        if self._identity is not None and now != self._identity:
            raise StoreError(f"results store {self.path} was replaced by another file during the run; cells "
                             "finished after that were not stored: rerun")

    def put(self, result: CellResult) -> None:
        if self.readonly:
            raise StoreError(f"results store {self.path} is read-only; choose a writable --out")
        self.check_same_file()
        row = {k: v for k, v in asdict(result).items() if k in _COLUMNS}
        for k in _JSON:
            row[k] = json.dumps(row[k])
        names = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self._errors(f"store cell {result.key} in"):
            with self.con:  # one transaction per cell: committed before the next one starts
                self.con.execute(f"INSERT OR REPLACE INTO cells ({names}) VALUES ({marks})",
                                 list(row.values()))
            count = self._count()
            present = self.con.execute("SELECT 1 FROM cells WHERE key = ?", [result.key]).fetchone()
        if count < self._rows or present is None:
            raise StoreError(f"results store {self.path} lost rows during the run ({self._rows} before this "
                             f"cell, {count} after): it was truncated or replaced; rerun")
        self._rows = count
        self.check_same_file()

    def verify(self, keys: list[str]) -> None:
        """After a run: the file on disk (a fresh connection, not this one) is intact and holds every
        key stored by this run."""
        self.check_same_file()
        uri = f"{self.path.resolve().as_uri()}?mode=ro"
        try:
            con = sqlite3.connect(uri, uri=True, timeout=self.busy_timeout_s)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot reopen results store {self.path} to verify it: "
                             f"{_one_line(exc)}") from None
        try:
            self._check_integrity(con)
            with self._errors("verify"):
                on_disk = {k for (k,) in con.execute("SELECT key FROM cells")}
        finally:
            con.close()
        missing = [k for k in keys if k not in on_disk]
        if missing:
            raise StoreError(f"results store {self.path} on disk lacks {len(missing)} of the {len(keys)} "
                             f"cells this run stored (first: {missing[0]}): it was replaced during the run; "
                             "rerun")
