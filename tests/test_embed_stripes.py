"""embed in column stripes: memory independent of the raster width, empty tiles skipped, resumable cancel."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import rasterio
import torch

from rasterlearn.embed import Backbone, embed
from rasterlearn.errors import JobCancelledError
from rasterlearn.grid import plan_column_stripes
from tests.test_embed import PoolNet


class _Recording(PoolNet):
    """PoolNet that counts the tiles it encodes and the all-zero (fully masked) tiles among them."""

    def __init__(self, stride: int) -> None:
        super().__init__(stride)
        self.tiles = 0
        self.blank = 0

    def forward_intermediates(self, x, indices=None, intermediates_only=True, **kw):
        self.tiles += x.shape[0]
        self.blank += int((x.flatten(1).abs().amax(dim=1) == 0).sum())
        return super().forward_intermediates(x, indices, intermediates_only, **kw)


def _backbone(net: PoolNet) -> Backbone:
    return Backbone(net, "pool", "cnn", 0, net.stride, 2, None)


def _sparse(make_raster, width: int) -> tuple[object, np.ndarray]:
    """2 bands, 96 rows, ``width`` cols; valid only in rows 10..60, cols 200..330 (same place at any width)."""
    data = np.zeros((2, 96, width), "uint8")
    rng = np.random.default_rng(5)
    data[:, 10:60, 200:330] = rng.integers(1, 255, (2, 50, 130))
    return make_raster(data, name=f"sparse_{width}.tif", nodata=0), data


KW = {"size": 32, "stride": 16, "normalization": "none", "device": "cpu", "batch_size": 4, "workers": 1}


def test_plan_column_stripes_covers_the_range_on_the_block_grid():
    width, stripes = plan_column_stripes(5, 1000, 64, bytes_per_col=2**20 / 200, memory_mb=1.0)
    assert width == 192  # 200 columns fit: 3 whole blocks
    assert stripes[0] == (5, 192) and stripes[-1][1] == 1000
    assert all(a[1] == b[0] for a, b in itertools.pairwise(stripes))
    assert all(s % 64 == 0 for s, _ in stripes[1:])
    assert plan_column_stripes(0, 100, 64, bytes_per_col=1e12, memory_mb=1.0) == (64, [(0, 64), (64, 100)])
    assert plan_column_stripes(0, 100, 64, bytes_per_col=1.0, memory_mb=1.0)[1] == [(0, 100)]


def test_embed_buffers_do_not_grow_with_width_and_empty_tiles_never_reach_the_model(make_raster, tmp_path):
    results, nets = [], []
    for width in (2048, 8192):
        src, _ = _sparse(make_raster, width)
        net = _Recording(8)
        res = embed(
            src,
            "pool",
            backbone=_backbone(net),
            memory_mb=0.05,
            output=tmp_path / f"f{width}.tif",
            cache_dir=tmp_path / "s",
            **KW,
        )
        results.append(res)
        nets.append(net)
    small, wide = results
    assert 1 < small.stripes < wide.stripes  # the wide raster is cut into more stripes ...
    assert small.peak_buffer_mb == pytest.approx(wide.peak_buffer_mb)  # ... and holds no more at a time
    assert wide.peak_buffer_mb < 0.25  # one block-wide stripe (64 feature px) at least, whatever the budget
    # only tiles touching the valid patch are encoded (tiles at stripe seams once per stripe), never a blank one
    assert nets[0].blank == nets[1].blank == 0
    assert nets[0].tiles == nets[1].tiles < 80
    assert wide.tiles - wide.tiles_skipped == small.tiles - small.tiles_skipped > 0
    with rasterio.open(small.path) as a, rasterio.open(wide.path) as b:
        np.testing.assert_array_equal(a.read(), b.read(window=((0, a.height), (0, a.width))))


@pytest.mark.parametrize("merge", ["average", "first", "center"])
def test_stripes_give_the_same_features_as_one_pass(make_raster, tmp_path, merge):
    data = np.random.default_rng(2).integers(1, 255, (2, 64, 400)).astype("uint8")
    src = make_raster(data, nodata=0)
    outs = []
    for mb in (0.02, 64.0):
        res = embed(
            src,
            "pool",
            backbone=_backbone(PoolNet(8)),
            memory_mb=mb,
            merge=merge,
            output=tmp_path / f"{merge}{mb}.tif",
            cache_dir=tmp_path / "s",
            **KW,
        )
        outs.append(res)
    assert outs[0].stripes > 1 and outs[1].stripes == 1
    with rasterio.open(outs[0].path) as a, rasterio.open(outs[1].path) as b:
        np.testing.assert_array_equal(a.read(), b.read())


def test_cancel_mid_embed_then_rerun_is_byte_identical(make_raster, tmp_path):
    data = np.random.default_rng(3).integers(1, 255, (2, 160, 400)).astype("uint8")
    data[:, 40:90] = 0  # empty tile rows still call progress, so a cancel there is honoured too
    src = make_raster(data, nodata=0)
    kw = {**KW, "backbone": _backbone(PoolNet(8)), "memory_mb": 0.02}
    calls: list[int] = []

    def cancel_after_12(n: int) -> None:
        calls.append(n)
        if len(calls) == 12:
            raise JobCancelledError("cancelled by the test")

    with pytest.raises(JobCancelledError):
        embed(
            src, "pool", output=tmp_path / "f.tif", cache_dir=tmp_path / "s", progress=cancel_after_12, **kw
        )
    assert not (tmp_path / "f.tif").exists()
    seen: list[int] = []
    res = embed(src, "pool", output=tmp_path / "f.tif", cache_dir=tmp_path / "s", progress=seen.append, **kw)
    ref = embed(src, "pool", output=tmp_path / "ref.tif", cache_dir=tmp_path / "r", **kw)
    assert res.resumed and res.stripes > 1
    assert sum(seen) == res.tiles  # resumed rows are counted, so a progress bar ends at its total
    assert res.path.read_bytes() == ref.path.read_bytes()


def test_embed_sparse_benchmark_still_runs():
    import runpy
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "bench" / "embed_sparse.py"
    argv = sys.argv
    sys.argv = [str(bench), "--size", "4000"]
    try:
        torch.set_num_threads(1)
        runpy.run_path(str(bench), run_name="__main__")
    finally:
        sys.argv = argv


def test_embed_announces_its_extent_clipped_tile_total(make_raster, tmp_path):
    from rasterlearn.engine.events import Monitor
    from rasterlearn.grid import Window

    src = make_raster(np.random.default_rng(4).integers(1, 255, (2, 64, 96)).astype("uint8"), nodata=0)
    monitor = Monitor(lambda event: None)
    phase = monitor.phase("embed", 999, "tiles")  # the caller's estimate over the whole raster
    kw = {**KW, "backbone": _backbone(PoolNet(8)), "stride": 32}
    res = embed(src, "pool", extent=Window(0, 0, 64, 64), output=tmp_path / "f.tif", progress=phase, **kw)
    assert res.tiles == 4 and phase.total == 4 and phase.done == 4
