"""Checksummed downloads (pooch against a loopback HTTP server), safe archive extraction, and the
``data download`` command for a downloadable and a manual dataset."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest
from test_converters import counts, data_cli, raw_sdd

from fsad_bench.data import download as dl  # noqa: E402
from fsad_bench.data.download import ManualDownload, Source, fetch, safe_extract  # noqa: E402
from fsad_bench.errors import DataError, UserError  # noqa: E402


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A loopback-only HTTP server over tmp_path/www; yields (base_url, folder, request log)."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    www = tmp_path / "www"
    www.mkdir()
    log: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def do_GET(self):
            log.append(self.path)
            super().do_GET()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", www, log
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetch_right_checksum_then_reuse(server, tmp_path):
    base, www, log = server
    (www / "data.bin").write_bytes(b"fsad" * 1000)
    out = fetch(f"{base}/data.bin", sha256(www / "data.bin"), tmp_path / "dl")
    assert out.read_bytes() == b"fsad" * 1000
    again = fetch(f"{base}/data.bin", sha256(www / "data.bin"), tmp_path / "dl")
    assert again == out and log == ["/data.bin"]  # the verified file is reused, not fetched again


def test_fetch_wrong_checksum_keeps_nothing(server, tmp_path):
    base, www, _ = server
    (www / "data.bin").write_bytes(b"tampered")
    with pytest.raises(DataError, match="checksum mismatch") as err:
        fetch(f"{base}/data.bin", "0" * 64, tmp_path / "dl")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "dl" / "data.bin").exists()


def test_fetch_missing_file_is_one_line(server, tmp_path):
    base, _, _ = server
    with pytest.raises(DataError, match="download of .* failed"):
        fetch(f"{base}/nope.zip", "0" * 64, tmp_path / "dl")


def _tar(path: Path, members: dict[str, bytes], link: tuple[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo(link[0])
            info.type, info.linkname = tarfile.SYMTYPE, link[1]
            tf.addfile(info)
    return path


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_safe_extract_good_archives(tmp_path):
    members = {"top/a.txt": b"a", "top/sub/b.txt": b"b"}
    for arc in (_tar(tmp_path / "x.tar.gz", members), _zip(tmp_path / "x.zip", members)):
        dest = safe_extract(arc, tmp_path / f"out-{arc.suffix}")
        assert (dest / "top/a.txt").read_bytes() == b"a" and (dest / "top/sub/b.txt").read_bytes() == b"b"


@pytest.mark.parametrize("kind, member", [
    ("tar", "../evil.txt"), ("tar", "ok/../../evil.txt"), ("tar", "/tmp/fsad-evil.txt"),
    ("zip", "../evil.txt"), ("zip", "/abs/evil.txt"), ("zip", "..\\evil.txt"), ("zip", "C:/evil.txt"),
])
def test_safe_extract_rejects_path_traversal(tmp_path, kind, member):
    members = {"good.txt": b"fine", member: b"evil"}
    arc = (_tar if kind == "tar" else _zip)(tmp_path / f"bad.{kind}", members)
    dest = tmp_path / "a" / "b" / "out"
    dest.parent.mkdir(parents=True)
    with pytest.raises(DataError, match="unsafe archive"):
        safe_extract(arc, dest)
    assert not dest.exists() and list(dest.parent.iterdir()) == []  # nothing extracted at all
    assert not (tmp_path / "a" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert not Path("/tmp/fsad-evil.txt").exists()


def test_safe_extract_rejects_links(tmp_path):
    arc = _tar(tmp_path / "link.tar.gz", {"a.txt": b"a"}, link=("escape", "/etc/passwd"))
    with pytest.raises(DataError, match="link"):
        safe_extract(arc, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_download_command_fetches_extracts_and_prepares(server, tmp_path, monkeypatch, capsys):
    base, www, _ = server
    raw_sdd(tmp_path / "src")
    arc = www / "KolektorSDD.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        for p in sorted((tmp_path / "src").rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(tmp_path / "src").as_posix())
    monkeypatch.setitem(dl.SOURCES, "sdd", Source("sdd", "https://example.invalid", "test", "by hand",
                                                  url=f"{base}/KolektorSDD.zip", sha256=sha256(arc),
                                                  filename="KolektorSDD.zip"))
    root = tmp_path / "root"
    assert data_cli("download", "sdd", "--root", str(root)) == 0
    assert counts(root / "sdd/sdd") == {("train", "good"): 4, ("test", "good"): 2, ("test", "defect"): 3}
    assert (root / ".downloads/sdd/KolektorSDD.zip").is_file()
    assert data_cli("download", "sdd", "--root", str(root)) == 0  # idempotent: reuses the verified file

    monkeypatch.setitem(dl.SOURCES, "sdd", Source("sdd", "https://example.invalid", "test", "by hand",
                                                  url=f"{base}/KolektorSDD.zip", sha256="1" * 64,
                                                  filename="KolektorSDD.zip"))
    with pytest.raises(DataError, match="checksum mismatch"):
        data_cli("download", "sdd", "--root", str(tmp_path / "root2"))


def test_manual_datasets_print_instructions_and_exit_2(tmp_path, capsys):
    for name in ("aitex", "optical", "mastcam", "brainmri", "headct", "hyperkvasir"):
        assert not dl.SOURCES[name].downloadable
        with pytest.raises(ManualDownload) as err:
            data_cli("download", name, "--root", str(tmp_path / "r"))
        assert err.value.exit_code == 2
        out = capsys.readouterr().out
        assert dl.SOURCES[name].page in out and f"fsad-bench data prepare {name} --raw" in out
    assert not (tmp_path / "r").exists()


def test_pinned_sources_are_well_formed():
    for s in dl.SOURCES.values():
        if s.url:
            assert s.url.startswith("https://") and len(s.sha256) == 64 and s.hash_from
            int(s.sha256, 16)


def test_elpv_download_needs_the_package(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n == "elpv_dataset" else real(n, *a))
    with pytest.raises(UserError, match=r"pip install 'fsad-bench\[elpv\]'"):
        dl.fetch_raw("elpv", tmp_path)
