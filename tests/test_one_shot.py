"""The one-shot setting (DRA's 1 labelled anomaly): ``--set n_anomaly=1`` on q1 and q2 from the
command line is a split setting like the spec's own: one labelled anomaly in every split manifest, the
setting in every stored row, in the run manifest and in the report's header, and rows of one shot are
never pooled with rows of ten."""

from __future__ import annotations

import json
from pathlib import Path

from own_data_toys import make_raw_folders

from fsad_bench.cli import main
from fsad_bench.store import ResultStore

BRIGHT = "toy_detectors:Brightness"


def _run(root: Path, out: Path, protocol: str, *extra: str) -> int:
    return main(["run", "--protocol", protocol, "--methods", BRIGHT, "--datasets", "mine", "--data-root",
                 str(root), "--budget", "smoke", "--seeds", "0,1", "--out", str(out), "--no-progress",
                 *extra])


def _rows(out: Path):
    with ResultStore(out) as store:
        return store.dataframe(with_blobs=True)


def test_one_labelled_anomaly_on_q1_and_q2_from_the_command_line(tmp_path, capsys):
    raw = make_raw_folders(tmp_path / "raw", n_per_class=12)
    root = tmp_path / "data"
    assert main(["data", "add", "mine", "--normal", str(raw["normal"]), "--abnormal", str(raw["abnormal"]),
                 "--data-root", str(root)]) == 0
    for protocol in ("q1", "q2"):
        out = tmp_path / protocol
        assert _run(root, out, protocol, "--set", "n_anomaly=1") == 0
        rows = _rows(out)
        assert len(rows) and (rows.status == "ok").all()
        assert all(s["n_anomaly"] == 1 for s in rows.setting), list(rows.setting)
        assert all(len(m["labelled_anomalies"]) == 1 for m in rows.manifest)
        assert all(m["n_anomaly"] == 1 for m in rows.manifest)
        if protocol == "q2":  # the one labelled anomaly is of the known class, which leaves the test set
            for setting, manifest in zip(rows.setting, rows.manifest):
                assert f"/{setting['known_class']}/" in manifest["labelled_anomalies"][0]
                assert not any(f"/{setting['known_class']}/" in f for f in manifest["test"])
        run_manifest = json.loads((out / "run_manifest.json").read_text())
        assert run_manifest["settings"]["n_anomaly"] == [1]
        capsys.readouterr()
        assert main(["report", str(out)]) == 0
        assert "n_anomaly=1" in capsys.readouterr().out

    # q1 again with the spec's 10 into the same folder: two configurations, two tables, never one cell
    # averaged over both (the one-shot rows' AUCs stay in the one-shot table)
    assert _run(root, tmp_path / "q1", "q1") == 0
    rows = _rows(tmp_path / "q1")
    assert sorted({s["n_anomaly"] for s in rows.setting}) == [1, 10]
    assert rows.config_id.nunique() == 2
    capsys.readouterr()
    assert main(["report", str(tmp_path / "q1")]) == 0
    text = capsys.readouterr().out
    assert "n_anomaly=1" in text and "n_anomaly=10" in text
