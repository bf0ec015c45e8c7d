"""Store faults: a store that vanishes, is replaced or damaged is detected (the run does not report
success); an unreadable store is a one-line error with integrity_check's verdict, never "already
finished"; a busy store is waited for; a read-only folder can be reported; a full disk stops with one
line and leaves no truncated manifest."""

from __future__ import annotations

import builtins
import errno
import json
import os
import sqlite3
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
from toy_detectors import Brightness

from fsad_bench.cli import main
from fsad_bench.detectors.base import TrainSet
from fsad_bench.store import STORE_NAME, CellResult, ResultStore, StoreError

ERROR = "fsad-bench: error:"


class TamperingBrightness(Brightness):
    """Brightness that, in its seed-1 cell, deletes or replaces the results store ($FSAD_TEST_STORE)."""

    def fit(self, train: TrainSet) -> TamperingBrightness:
        if train.seed == 1:
            path = Path(os.environ["FSAD_TEST_STORE"])
            if os.environ["FSAD_TEST_ACTION"] == "delete":
                for suffix in ("", "-wal", "-shm"):
                    path.with_name(path.name + suffix).unlink(missing_ok=True)
            else:  # an older copy put in its place
                other = path.with_name("other.sqlite")
                with sqlite3.connect(other) as con:
                    con.execute("CREATE TABLE cells (key TEXT PRIMARY KEY)")
                os.replace(other, path)
        return super().fit(train)


def _run_args(data_root: Path, out: Path, methods: str = "toy_detectors:Brightness", seeds: str = "0,1,2"):
    return ["run", "--methods", methods, "--datasets", "brainmri", "--data-root", str(data_root), "--budget",
            "smoke", "--seeds", seeds, "--out", str(out), "--no-progress"]


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith(ERROR)]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _result(key: str, seed: int = 0) -> CellResult:
    return CellResult(key=key, protocol="q1", dataset="d", category="c", method="m", seed=seed, setting={},
                      budget="smoke", img_size=32, status="ok", auc_roc=0.75, scores={"scores": [0.1]})


@pytest.mark.parametrize("action", ["delete", "replace"])
def test_store_deleted_or_replaced_during_a_run_stops_it(action, data_root, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    monkeypatch.setenv("FSAD_TEST_STORE", str(out / STORE_NAME))
    monkeypatch.setenv("FSAD_TEST_ACTION", action)
    code = main(_run_args(data_root, out, "test_store_faults:TamperingBrightness"))
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2
    assert ("disappeared during the run" if action == "delete" else "replaced by another file") in line
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["status"] == "error" and "StoreError" in manifest["summary"]["error"]


def test_file_that_is_not_a_database_is_one_line_naming_integrity_check(data_root, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / STORE_NAME).write_bytes(b"these are not the rows you are looking for\n" * 200)
    assert main(_run_args(data_root, out)) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "PRAGMA integrity_check: file is not a database" in line and str(out / STORE_NAME) in line
    assert main(["report", str(out)]) == 2
    assert "integrity_check" in _one_error_line(capsys.readouterr().err)


def test_damaged_pages_are_one_line_with_the_verdict(data_root, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_run_args(data_root, out)) == 0
    path = out / STORE_NAME
    data = bytearray(path.read_bytes())
    page = len(data) // 4096 - 1  # the last b-tree page: its cells point out of range
    data[page * 4096 + 8:page * 4096 + 40] = b"\xff" * 32
    path.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(_run_args(data_root, out)) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "is damaged (" in line and "PRAGMA integrity_check:" in line and "already finished" not in line
    assert "with text" not in line  # the damaged bytes are not repeated into the message


def test_undecodable_row_is_an_error_not_already_finished(data_root, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_run_args(data_root, out)) == 0
    with sqlite3.connect(out / STORE_NAME) as con:
        key = con.execute("SELECT key FROM cells WHERE seed = 1").fetchone()[0]
        con.execute("UPDATE cells SET setting = '{\"n_anomaly\": 1' WHERE key = ?", [key])  # cut short
    capsys.readouterr()
    assert main(_run_args(data_root, out)) == 2
    err = capsys.readouterr().err
    line = _one_error_line(err)
    assert f"row {key} has an undecodable 'setting'" in line and "PRAGMA integrity_check: ok" in line
    assert "already finished" not in err
    assert main(["report", str(out)]) == 2  # the report refuses it too
    assert key in _one_error_line(capsys.readouterr().err)


def test_ok_row_without_a_finite_auc_is_not_finished(tmp_path):
    with ResultStore(tmp_path) as store:
        store.put(_result("a"))
        store.con.execute("UPDATE cells SET auc_roc = NULL")
        store.con.commit()
        with pytest.raises(StoreError, match="row a is 'ok' without a finite AUC"):
            store.done_keys()


def test_busy_store_is_waited_for(tmp_path):
    with ResultStore(tmp_path) as store:
        store.put(_result("a"))
        other = sqlite3.connect(store.path, check_same_thread=False)
        other.execute("BEGIN EXCLUSIVE")  # another process writing for longer than sqlite3's 5 s default
        released = threading.Timer(6.0, other.rollback)
        released.start()
        try:
            store.put(_result("b", seed=1))
        finally:
            released.join()
            other.close()
        assert store.done_keys() == {"a", "b"}


def test_store_locked_past_the_timeout_is_one_line(tmp_path):
    with ResultStore(tmp_path, busy_timeout_s=0.2) as store:
        other = sqlite3.connect(store.path)
        other.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(StoreError, match="locked by another process"):
                store.put(_result("a"))
        finally:
            other.rollback()
            other.close()


@contextmanager
def read_only(folder: Path):
    """``folder`` that no process, root included, can create files in (chmod; chattr +i for root)."""
    modes = {p: p.stat().st_mode for p in [folder, *folder.iterdir()]}
    immutable = False
    try:
        for p in modes:
            p.chmod(0o444 if p.is_file() else 0o555)
        if os.geteuid() == 0:
            immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
        try:
            (folder / "probe").touch()
        except OSError:
            pass
        else:
            (folder / "probe").unlink()
            pytest.skip("cannot make a read-only folder on this machine")
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        for p, mode in modes.items():
            p.chmod(mode)


def test_read_only_results_folder_can_be_reported(data_root, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_run_args(data_root, out)) == 0
    capsys.readouterr()
    (out / "run_manifest.json").unlink()
    for sub in ("manifests",):
        for f in (out / sub).iterdir():
            f.unlink()
        (out / sub).rmdir()
    assert not (out / f"{STORE_NAME}-wal").exists()
    with read_only(out):
        with ResultStore(out) as store:
            assert store.readonly and len(store.done_keys()) == 3
        assert main(["report", str(out), "--format", "csv"]) == 0
        assert "BrainMRI" in capsys.readouterr().out
        # markdown and html too: their figures go to the user's cache, which the report names
        assert main(["report", str(out)]) == 0
        captured = capsys.readouterr()
        assert "cannot be written" in captured.err and "report-figures" in captured.err
        figures = [Path(line.split("figure: ", 1)[1]) for line in captured.out.splitlines()
                   if "figure: " in line]
        assert figures and all(f.is_file() and out not in f.parents for f in figures)
        assert main(["report", str(out), "--format", "html"]) == 2  # its default file is in the folder
        line = _one_error_line(capsys.readouterr().err)
        assert "report.html" in line and "-o FILE" in line
        assert main(["report", str(out), "--format", "html", "-o", str(tmp_path / "r.html")]) == 0
        assert "<img" in (tmp_path / "r.html").read_text()
        assert main(_run_args(data_root, out)) == 2
        line = _one_error_line(capsys.readouterr().err)  # refused before the grid, store untouched
        assert str(out) in line and "not writable" in line


def test_read_only_store_with_an_unmerged_log_shows_every_row(tmp_path):
    out = tmp_path / "out"
    code = ("import os, sys; sys.path.insert(0, sys.argv[2]); from test_store_faults import _result; "
            "from fsad_bench.store import ResultStore; s = ResultStore(sys.argv[1]); "
            "[s.put(_result(f'k{i}', i)) for i in range(5)]; os._exit(0)")  # killed: no checkpoint
    subprocess.run([sys.executable, "-c", code, str(out), str(Path(__file__).parent)], check=True,
                   timeout=120)
    assert (out / f"{STORE_NAME}-wal").stat().st_size > 0
    with read_only(out):
        with ResultStore(out) as store:
            assert store.readonly and store.done_keys() == {f"k{i}" for i in range(5)}


class _FullDisk:
    """A sqlite3 connection whose INSERTs fail with 'database or disk is full' after ``allow`` of them."""

    def __init__(self, con: sqlite3.Connection, allow: list[int]) -> None:
        self._con, self._allow = con, allow

    def execute(self, sql: str, *args):
        if sql.lstrip().upper().startswith("INSERT"):
            if self._allow[0] <= 0:
                raise sqlite3.OperationalError("database or disk is full")
            self._allow[0] -= 1
        return self._con.execute(sql, *args)

    def __enter__(self):
        return self._con.__enter__()

    def __exit__(self, *exc):
        return self._con.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self._con, name)


def test_disk_full_in_the_store_is_one_line_and_keeps_stored_cells(data_root, tmp_path, monkeypatch, capsys):
    real_connect, allow = sqlite3.connect, [1]
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: _FullDisk(real_connect(*a, **k), allow))
    out = tmp_path / "out"
    code = main(_run_args(data_root, out))
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and "database or disk is full" in line and "free space and rerun" in line
    monkeypatch.undo()
    with ResultStore(out) as store:
        assert len(store.done_keys()) == 1  # the cell stored before the disk filled up
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["status"] == "error" and "disk is full" in manifest["summary"]["error"]


def _manifest_writes_fail_after(monkeypatch, allowed: int) -> None:
    """Writes of manifest files (run-*.json, run_manifest.json, their temporary files) fail with ENOSPC
    after ``allowed`` of them, having written half their text, as a full disk does."""
    real_open, count = builtins.open, [0]

    class HalfWritten:
        def __init__(self, fh):
            self._fh = fh

        def write(self, text):
            self._fh.write(text[: len(text) // 2])
            self._fh.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._fh.close()

        def __getattr__(self, name):
            return getattr(self._fh, name)

    def fake_open(file, mode="r", *args, **kwargs):
        fh = real_open(file, mode, *args, **kwargs)
        name = Path(str(file)).name.lstrip(".")
        if any(m in mode for m in "wxa") and name.startswith(("run-", "run_manifest")):
            count[0] += 1
            if count[0] > allowed:
                return HalfWritten(fh)
        return fh

    monkeypatch.setattr(builtins, "open", fake_open)


def _manifest_files(out: Path) -> list[Path]:
    return [p for p in [out / "run_manifest.json", *(out / "manifests").glob("*")] if p.exists()]


def test_disk_full_on_the_first_manifest_write_leaves_no_truncated_manifest(data_root, tmp_path, monkeypatch,
                                                                             capsys):
    out = tmp_path / "out"
    _manifest_writes_fail_after(monkeypatch, 0)
    code = main(_run_args(data_root, out))
    monkeypatch.undo()
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and "No space left on device" in line and "free disk space" in line
    assert _manifest_files(out) == []  # neither a truncated manifest nor a temporary file


def test_disk_full_on_the_last_manifest_write_keeps_the_previous_one(data_root, tmp_path, monkeypatch,
                                                                     capsys):
    out = tmp_path / "out"
    _manifest_writes_fail_after(monkeypatch, 2)  # the two writes at the start succeed, the final ones fail
    code = main(_run_args(data_root, out))
    monkeypatch.undo()
    assert code == 2 and "No space left on device" in _one_error_line(capsys.readouterr().err)
    files = _manifest_files(out)
    assert len(files) == 2 and all(json.loads(p.read_text())["status"] == "running" for p in files)
    with ResultStore(out) as store:
        assert len(store.done_keys()) == 3  # every computed cell was stored


def _store_files(out: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in out.iterdir()
            if p.name.startswith(STORE_NAME)}


def test_report_and_dry_run_read_the_store_without_modifying_it(data_root, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_run_args(data_root, out, seeds="0")) == 0
    before = _store_files(out)
    assert list(before) == [STORE_NAME]  # no -wal / -shm left by the run
    assert main(["report", str(out)]) == 0
    assert main(_run_args(data_root, out, seeds="0,1") + ["--dry-run"]) == 0
    capsys.readouterr()
    assert _store_files(out) == before


def test_a_report_describes_an_old_store_once_and_changes_nothing_else(data_root, tmp_path, capsys):
    """A store of fsad-bench 0.1 (no description tables, fewer columns): the report adds the two tables
    and their rows (fsad_bench.upgrade), never the columns a run would add."""
    out = tmp_path / "out"
    assert main(_run_args(data_root, out, seeds="0")) == 0
    with sqlite3.connect(out / STORE_NAME) as con:
        for table in ("protocols", "methods"):
            con.execute(f"DROP TABLE {table}")
        for column in ("flags", "config_id"):
            con.execute(f"ALTER TABLE cells DROP COLUMN {column}")
    con.close()

    def schema() -> tuple[list[str], set[str]]:
        with sqlite3.connect(out / STORE_NAME) as con:
            cols = [r[1] for r in con.execute("PRAGMA table_info(cells)")]
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        con.close()
        return cols, tables

    columns, _ = schema()
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    assert "Q1" in capsys.readouterr().out
    assert schema() == (columns, {"cells", "protocols", "methods"})
    described = _store_files(out)
    assert main(["report", str(out)]) == 0  # described once: the next report writes nothing
    assert _store_files(out) == described


def test_a_new_store_appears_whole_so_a_reader_never_sees_an_empty_file(tmp_path, monkeypatch):
    """The store is made under a temporary name and linked into place: the path never holds the 0-byte
    file SQLite writes first, which a reader polling a starting run (`status`, a report, a test) or a
    run killed at that moment would have to refuse as empty. Checked at the moment the path is opened."""
    real_connect, seen = sqlite3.connect, []

    def connect(database, *args, **kwargs):
        path = Path(str(database))
        if path.name == STORE_NAME:
            seen.append(path.stat().st_size if path.exists() else None)
        return real_connect(database, *args, **kwargs)

    monkeypatch.setattr("fsad_bench.store.sqlite3.connect", connect)
    with ResultStore(tmp_path / "out") as store:
        assert store.columns and "key" in store.columns
    assert len(seen) == 1 and seen[0] is not None and seen[0] > 0  # whole before its first opening
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(STORE_NAME)) == []
    with ResultStore(tmp_path / "out", create=False) as store:  # and a store, not just a file
        assert store.done_keys() == set()


def test_a_store_made_by_another_process_first_is_kept(tmp_path, monkeypatch):
    """Two runs starting on one folder: the one that links second opens the other's store, whole."""
    folder = tmp_path / "out"
    with ResultStore(folder) as first:
        first.put(CellResult(key="k", protocol="q1", dataset="d", category="c", method="m", seed=0,
                             setting={}, budget="smoke", img_size=32, status="ok", auc_roc=0.9))
    real_exists, calls = Path.exists, []

    def exists(self):  # the second run looked (twice) before the first had linked its file
        if self.name == STORE_NAME and len(calls) < 2:
            calls.append(self)
            return False
        return real_exists(self)

    monkeypatch.setattr(Path, "exists", exists)
    links = []
    real_link = os.link
    monkeypatch.setattr("fsad_bench.store.os.link", lambda src, dst: links.append(dst) or real_link(src, dst))
    with ResultStore(folder) as second:
        assert second.done_keys() == {"k"}  # the first run's row, not a new empty store in its place
    assert len(links) == 1  # it did try to link its own, and was refused
    assert [p.name for p in folder.iterdir() if p.name.endswith(".new")] == []
