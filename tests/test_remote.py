"""Remote and virtual rasters: URLs, /vsicurl/ over a local HTTP server with range requests, /vsizip/."""

from __future__ import annotations

import json
import os
import re
import threading
import zipfile
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from rasterlearn.cli import main
from rasterlearn.errors import ReadError
from rasterlearn.io.raster import RasterReader
from rasterlearn.io.remote import CLOUD_DEFAULTS, apply_cloud_defaults, gdal_path, is_remote, is_virtual


class _RangeHandler(SimpleHTTPRequestHandler):
    """A static file server that honours single ``Range: bytes=a-b`` requests (as COG readers need)."""

    requests: list[str] = []

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def send_head(self):  # type: ignore[no-untyped-def]
        rng = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        type(self).requests.append(f"{self.command} {self.path} {rng or ''}")
        if not rng or not path.is_file():
            return super().send_head()
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
        size = path.stat().st_size
        if not m:
            self.send_error(416)
            return None
        start = int(m.group(1))
        end = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
        f = path.open("rb")
        f.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", "image/tiff")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        self._remaining = end - start + 1
        return f

    def copyfile(self, source, outputfile):  # type: ignore[no-untyped-def]
        remaining = getattr(self, "_remaining", None)
        if remaining is None:
            return super().copyfile(source, outputfile)
        outputfile.write(source.read(remaining))
        self._remaining = None
        return None


@pytest.fixture()
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    root = tmp_path / "www"
    root.mkdir()
    _RangeHandler.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_RangeHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _cog(path: Path, size: int = 300, bands: int = 3) -> np.ndarray:
    rng = np.random.default_rng(3)
    data = rng.integers(1, 250, (bands, size, size), dtype=np.uint8)
    with rasterio.open(
        path,
        "w",
        driver="COG",
        width=size,
        height=size,
        count=bands,
        dtype="uint8",
        crs="EPSG:32633",
        transform=from_origin(500000, 4000000, 2, 2),
        nodata=0,
        blocksize=128,
    ) as dst:
        dst.write(data)
    return data


def test_gdal_path_translates_urls_and_keeps_virtual_paths() -> None:
    assert gdal_path("https://h/a.tif") == "/vsicurl/https://h/a.tif"
    assert gdal_path("s3://bucket/k/a.tif") == "/vsis3/bucket/k/a.tif"
    assert gdal_path("gs://b/a.tif") == "/vsigs/b/a.tif"
    assert gdal_path("az://c/a.tif") == "/vsiaz/c/a.tif"
    assert gdal_path("/vsizip//data/a.zip/b.tif") == "/vsizip//data/a.zip/b.tif"
    assert gdal_path(Path("/data/a.tif")) == "/data/a.tif"
    assert is_virtual("/vsizip//x.zip/a.tif") and not is_remote("/vsizip//x.zip/a.tif")
    assert is_remote("/vsicurl/http://x/a.tif") and is_remote("s3://b/a.tif")
    assert not is_virtual("data/a.tif")


def test_cloud_defaults_never_override_the_user(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in CLOUD_DEFAULTS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "9")
    set_now = apply_cloud_defaults()
    assert os.environ["GDAL_HTTP_MAX_RETRY"] == "9" and "GDAL_HTTP_MAX_RETRY" not in set_now
    assert os.environ["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"


def test_vsicurl_read_equals_local_and_uses_ranges(http_root: tuple[Path, str]) -> None:
    root, base = http_root
    data = _cog(root / "x.tif")
    for url in (f"/vsicurl/{base}/x.tif", f"{base}/x.tif"):
        with RasterReader(url) as r:
            block = r.read()
            assert r.grid.crs is not None and r.grid.transform == from_origin(500000, 4000000, 2, 2)
        np.testing.assert_array_equal(block.data, data)
    assert any("bytes=" in q for q in _RangeHandler.requests), _RangeHandler.requests
    # no directory listing of the server's folder on open
    assert not any(q.startswith("GET / ") or q.endswith("/ ") for q in _RangeHandler.requests)


def test_remote_404_is_one_clear_line(http_root: tuple[Path, str]) -> None:
    _, base = http_root
    with pytest.raises(ReadError, match=r"Cannot open remote raster .*missing\.tif.*(404|does not exist)"):
        RasterReader(f"/vsicurl/{base}/missing.tif")


def test_cli_info_keeps_double_slashes(
    http_root: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, base = http_root
    _cog(root / "x.tif")
    assert main(["info", f"/vsicurl/{base}/x.tif", "--json"]) == 0
    desc = json.loads(capsys.readouterr().out)
    assert desc["width"] == 300 and desc["count"] == 3 and desc["epsg"] == 32633
    # /vsizip/ with an absolute path inside (two slashes) must reach GDAL unchanged
    zpath = tmp_path / "a.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        z.write(root / "x.tif", "inner/x.tif")
    assert main(["info", f"/vsizip/{zpath}/inner/x.tif", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["height"] == 300
    assert main(["info", f"{base}/nothing.tif"]) == 2
    err = capsys.readouterr().err
    assert "nothing.tif" in err and "404" in err and "Traceback" not in err


def test_embed_and_cluster_over_http_equal_local_files(
    http_root: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, base = http_root
    _cog(root / "x.tif", size=160)
    local = str(root / "x.tif")
    url = f"/vsicurl/{base}/x.tif"
    embed = ["embed", "--model", "resnet18", "--no-pretrained", "--seed", "1", "--size", "64"]
    embed += ["--stride", "64", "--device", "cpu"]
    outs = {}
    for name, src in (("local", local), ("http", url)):
        feat = tmp_path / f"f_{name}.tif"
        assert main(["-q", embed[0], src, *embed[1:], "-o", str(feat)]) == 0, capsys.readouterr().err
        km = tmp_path / f"k_{name}.tif"
        assert main(["-q", "cluster", src, "--method", "kmeans", "--clusters", "3", "-o", str(km)]) == 0
        outs[name] = (feat, km)
    with rasterio.open(outs["local"][0]) as a, rasterio.open(outs["http"][0]) as b:
        assert a.count == b.count and a.transform == b.transform
        np.testing.assert_array_equal(a.read(), b.read())
    with rasterio.open(outs["local"][1]) as a, rasterio.open(outs["http"][1]) as b:
        np.testing.assert_array_equal(a.read(), b.read())


def test_predict_over_http_equals_local_file(http_root: tuple[Path, str], tmp_path: Path, capsys) -> None:
    from tests.test_predict import _package

    root, base = http_root
    _cog(root / "x.tif", size=160)
    pkg = _package(tmp_path)
    for name, src in (("local", str(root / "x.tif")), ("http", f"/vsicurl/{base}/x.tif")):
        assert main(["-q", "predict", str(pkg), src, "-o", str(tmp_path / f"{name}.tif")]) == 0, (
            capsys.readouterr().err
        )
    with rasterio.open(tmp_path / "local.tif") as a, rasterio.open(tmp_path / "http.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
        assert a.transform == b.transform and a.crs == b.crs
