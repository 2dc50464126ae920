"""rasterlearn.assess on small generated maps: sampling, the design record, assessment, errors and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
from affine import Affine
from shapely.geometry import Point

from rasterlearn.assess import draw_sample, estimate_accuracy, read_design
from rasterlearn.assess.run import assess_sample
from rasterlearn.cli import main
from rasterlearn.errors import InputError, OutputError
from rasterlearn.labels import ClassInfo, ClassSchema
from tests.conftest import write_tif

TRANSFORM = Affine(30.0, 0.0, 700_000.0, 0.0, -30.0, 5_000_000.0)
SCHEMA = ClassSchema(
    (ClassInfo(1, "forest", "#1b7837"), ClassInfo(2, "crops", "#ffd92f"), ClassInfo(3, "water", "#2166ac")),
    255,
    None,
)
NAMES = {1: "forest", 2: "crops", 3: "water"}


def _scene(seed: int = 3, shape: tuple[int, int] = (48, 64)) -> tuple[np.ndarray, np.ndarray]:
    """A map (0 = nodata in the top-left corner) and the truth it errs against (known, for labelling)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    truth = np.where(cols < shape[1] * 0.55, 1, 2).astype("uint8")
    truth[(rows - 30) ** 2 + (cols - 45) ** 2 < 60] = 3
    mapped = truth.copy()
    flip = rng.random(shape) < 0.15
    mapped[flip] = rng.choice([1, 2, 3], int(flip.sum()))
    mapped[:6, :8] = 0
    return mapped, truth


@pytest.fixture
def scene(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    mapped, truth = _scene()
    path = write_tif(tmp_path / "map.tif", mapped, crs="EPSG:32617", transform=TRANSFORM, nodata=0)
    with rasterio.open(path, "r+") as ds:
        ds.update_tags(classes=json.dumps(SCHEMA.to_dict()))
    return path, mapped, truth


def _label(samples: Path, truth: np.ndarray, field: str = "reference", as_names: bool = True) -> None:
    """Fill the reference field of the samples layer, as an interpreter does in QGIS (design tables stay)."""
    gdf = gpd.read_file(samples, layer="samples")
    codes = truth[gdf["row"], gdf["col"]]
    gdf[field] = [NAMES[int(c)] if as_names else str(int(c)) for c in codes]
    _rewrite(samples, gdf)


def _rewrite(samples: Path, gdf: gpd.GeoDataFrame) -> None:
    pyogrio.write_dataframe(gdf, samples, layer="samples", layer_options={"OVERWRITE": "YES"})


def _edit(samples: Path, ident: int, **values: object) -> None:
    gdf = gpd.read_file(samples, layer="samples")
    for key, value in values.items():
        gdf.loc[gdf["id"] == ident, key] = value
    _rewrite(samples, gdf)


def test_stratified_sample_points_design_and_inclusion_probabilities(scene, tmp_path: Path) -> None:
    path, mapped, _ = scene
    res = draw_sample(path, tmp_path / "s.gpkg", n=60, min_per_class=10, seed=0)
    assert [str(n) for n, _ in pyogrio.list_layers(res.path)] == ["samples", "design", "strata"]
    gdf = gpd.read_file(res.path, layer="samples")
    assert len(gdf) == res.n == 60 and gdf.crs.to_epsg() == 32617
    # points at pixel centres, on the map class they record, never on nodata
    x, y = TRANSFORM @ (gdf["col"].to_numpy() + 0.5, gdf["row"].to_numpy() + 0.5)
    np.testing.assert_allclose(gdf.geometry.x, x)
    np.testing.assert_allclose(gdf.geometry.y, y)
    at = mapped[gdf["row"], gdf["col"]]
    assert (at > 0).all() and (at == gdf["map_code"]).all() and (gdf["stratum"] == gdf["map_code"]).all()
    assert set(gdf["map_class"]) <= {"forest", "crops", "water"} and gdf["reference"].isna().all()
    assert len(set(zip(gdf["row"], gdf["col"], strict=True))) == 60  # without replacement
    d = read_design(res.path)
    assert d is not None and d["design"] == "stratified" and d["seed"] == 0 and d["n"] == 60
    counts = np.bincount(mapped.ravel(), minlength=4)
    strata = {s["code"]: s for s in d["strata"]}
    for code in (1, 2, 3):
        s = strata[code]
        assert s["pixels"] == counts[code] and s["area"] == counts[code] * 900.0
        assert s["area_ha"] == pytest.approx(counts[code] * 0.09)
        assert s["samples"] == int((gdf["stratum"] == code).sum()) >= 10
        assert s["inclusion_probability"] == pytest.approx(s["samples"] / s["pixels"])
    assert sum(s["pixels"] * s["inclusion_probability"] for s in d["strata"]) == pytest.approx(60)
    assert d["pixels"] == int(counts[1:].sum())  # nodata excluded
    np.testing.assert_allclose(gdf["incl_prob"], [strata[c]["inclusion_probability"] for c in gdf["stratum"]])
    assert d["map"]["grid"]["transform"][:6] == list(TRANSFORM)[:6]
    table = pyogrio.read_dataframe(res.path, layer="strata")
    assert table["samples"].sum() == 60 and list(table["name"]) == ["forest", "crops", "water"]


def test_sample_is_seeded_and_does_not_depend_on_the_block_size(scene, tmp_path: Path) -> None:
    path, _, _ = scene
    cells = []
    for name, seed, block in (("a", 4, 1024), ("b", 4, 5), ("c", 5, 1024)):
        res = draw_sample(path, tmp_path / f"{name}.gpkg", n=40, seed=seed, blocksize=block)
        g = gpd.read_file(res.path, layer="samples")
        cells.append(sorted(zip(g["row"], g["col"], strict=True)))
    assert cells[0] == cells[1] and cells[0] != cells[2]


def test_stratified_selection_is_uniform_within_strata(tmp_path: Path) -> None:
    """Every pixel of a stratum is drawn with probability n_h/N_h: selection counts over many seeds are
    spread like binomial counts (a sampler favouring early pixels fails by orders of magnitude)."""
    mapped = np.ones((10, 12), dtype="uint8")
    mapped[:, 8:] = 2  # 80 and 40 pixels
    path = write_tif(tmp_path / "m.tif", mapped, crs="EPSG:32617", transform=TRANSFORM, nodata=0)
    freq = np.zeros(mapped.shape)
    reps = 50
    for seed in range(reps):
        g = gpd.read_file(
            draw_sample(path, tmp_path / f"s{seed}.fgb", n=20, seed=seed, allocation="equal").path
        )
        freq[g["row"], g["col"]] += 1
    for code, n_h in ((1, 10), (2, 10)):
        obs = freq[mapped == code]
        p = n_h / obs.size
        assert obs.sum() == reps * n_h
        chi2 = float(((obs - reps * p) ** 2 / (reps * p * (1 - p))).mean())
        assert 0.5 < chi2 < 1.6, chi2


def test_random_and_systematic_designs(scene, tmp_path: Path) -> None:
    path, mapped, _ = scene
    valid = int((mapped > 0).sum())
    rnd = draw_sample(path, tmp_path / "r.gpkg", design="random", n=50, seed=1)
    d = rnd.design
    assert d["design"] == "random" and rnd.n == 50 and "post-stratified" in d["estimator"]
    assert all(s["inclusion_probability"] == pytest.approx(50 / valid) for s in d["strata"])
    assert sum(s["samples"] for s in d["strata"]) == 50
    sys_ = draw_sample(path, tmp_path / "y.geojson", design="systematic", n=100, seed=1)
    g = gpd.read_file(sys_.path)
    step = sys_.design["step"]
    assert step == int(np.sqrt(valid / 100))
    r0, c0 = sys_.design["offset"]
    assert 0 <= r0 < step and 0 <= c0 < step
    assert ((g["row"] - r0) % step == 0).all() and ((g["col"] - c0) % step == 0).all()
    lattice = mapped[r0::step, c0::step]
    assert len(g) == int((lattice > 0).sum())  # every valid lattice pixel, nodata skipped
    assert (tmp_path / "y.geojson.design.json").exists() and read_design(sys_.path)["design"] == "systematic"


def test_assess_reproduces_the_estimator_and_writes_every_output(scene, tmp_path: Path) -> None:
    path, mapped, truth = scene
    s = draw_sample(path, tmp_path / "s.gpkg", n=90, min_per_class=20, seed=2).path
    _label(s, truth)
    out = tmp_path / "out" / "assessment.json"
    res = assess_sample(path, s, output=out)
    for suffix in (".json", ".csv", ".png", ".html"):
        assert out.with_suffix(suffix).stat().st_size > 0
    assert json.loads(out.read_text())["overall_accuracy"] == res["overall_accuracy"]
    g = gpd.read_file(s, layer="samples")
    m = g["map_code"].to_numpy() - 1
    ref = truth[g["row"], g["col"]].astype(int) - 1
    counts = np.bincount(mapped.ravel(), minlength=4)[1:]
    e = estimate_accuracy(m, m, ref, counts, 3)
    assert res["overall_accuracy"]["estimate"] == pytest.approx(e.overall)
    assert res["overall_accuracy"]["se"] == pytest.approx(e.overall_se)
    assert res["n"] == 90 and res["design"]["design"] == "stratified"
    total_ha = counts.sum() * 0.09
    for k, name in enumerate(["forest", "crops", "water"]):
        c = res["per_class"][name]
        assert c["mapped_pixels"] == counts[k] and c["mapped_area_ha"] == pytest.approx(counts[k] * 0.09)
        assert c["area_ha"]["estimate"] == pytest.approx(e.area[k] * total_ha)
        assert c["area_ha"]["ci_high"] - c["area_ha"]["ci_low"] == pytest.approx(
            2 * e.z * e.area_se[k] * total_ha
        )
        assert c["users_accuracy"]["estimate"] == pytest.approx(e.users[k])
        assert c["producers_accuracy"]["estimate"] == pytest.approx(e.producers[k])
    assert res["error_matrix"]["counts"] == e.counts.tolist()
    true_area = np.bincount(truth[mapped > 0], minlength=4)[1:] * 0.09
    lo = [res["per_class"][n]["area_ha"]["ci_low"] for n in ("forest", "crops", "water")]
    assert res["area_unit"] == "metre²" and res["total_area_ha"] == pytest.approx(total_ha)
    assert np.all(np.asarray(lo) < true_area)


def test_strata_that_differ_from_the_map_classes(scene, tmp_path: Path) -> None:
    path, mapped, truth = scene
    strata = np.where(np.arange(48)[:, None] < 20, 10, 20) * np.ones((1, 64), dtype="uint8")
    strata[40:, 50:] = 0  # strata nodata where the map is valid: not part of the population
    spath = write_tif(
        tmp_path / "strata.tif", strata.astype("uint8"), crs="EPSG:32617", transform=TRANSFORM, nodata=0
    )
    s = draw_sample(path, tmp_path / "s.gpkg", n=60, strata=spath, allocation="equal", seed=0)
    d = s.design
    assert d["strata_source"] == "strata raster" and "Stehman" in d["estimator"]
    both = (mapped > 0) & (strata > 0)  # strata sizes count pixels valid in both rasters
    assert {x["code"]: x["pixels"] for x in d["strata"]} == {
        10: int(both[:20].sum()),
        20: int(both[20:].sum()),
    }
    assert d["pixels"] == int(both.sum())
    _label(s.path, truth, as_names=False)  # codes work too
    res = assess_sample(path, s.path)
    g = gpd.read_file(s.path, layer="samples")
    assert (strata[g["row"], g["col"]] == g["stratum"]).all()
    e = estimate_accuracy(
        (g["stratum"] == 20).astype(int),
        g["map_code"] - 1,
        truth[g["row"], g["col"]].astype(int) - 1,
        [x["pixels"] for x in d["strata"]],
        3,
    )
    assert res["overall_accuracy"]["estimate"] == pytest.approx(e.overall)
    assert res["total_pixels"] == int(both.sum())
    assert res["per_class"]["water"]["mapped_pixels"] == int((mapped[both] == 3).sum())
    assert res["per_class"]["water"]["area"]["se"] == pytest.approx(e.area_se[2] * both.sum() * 900)
    # the stored strata are checked against the strata raster
    _edit(s.path, int(g["id"][g["stratum"] == 10].iloc[0]), stratum=20)
    with pytest.raises(InputError, match="another stratum"):
        assess_sample(path, s.path)
    # a moved strata raster is found again with strata=
    _edit(s.path, int(g["id"][g["stratum"] == 10].iloc[0]), stratum=10)
    moved = spath.rename(tmp_path / "moved.tif")
    with pytest.raises(InputError, match="not there any more"):
        assess_sample(path, s.path)
    assert assess_sample(path, s.path, strata=moved)["overall_accuracy"] == res["overall_accuracy"]
    other = write_tif(
        tmp_path / "other.tif", strata[:40].astype("uint8"), crs="EPSG:32617", transform=TRANSFORM
    )
    with pytest.raises(InputError, match="not on the map's grid"):
        draw_sample(path, tmp_path / "t.gpkg", n=10, strata=other)
    # a plain point layer with a strata raster: Stehman's estimators with the raster's strata
    plain = g[["reference", "geometry"]]
    plain.to_file(tmp_path / "plain.gpkg")
    res2 = assess_sample(path, tmp_path / "plain.gpkg", strata=moved)
    assert "Stehman" in res2["design"]["estimator"]
    assert res2["overall_accuracy"] == res["overall_accuracy"]
    with pytest.raises(InputError, match="does not apply"):
        assess_sample(path, draw_sample(path, tmp_path / "m.gpkg", n=20).path, strata=moved)


def test_a_plain_point_layer_is_accepted_and_its_design_stated(scene, tmp_path: Path) -> None:
    path, mapped, truth = scene
    rng = np.random.default_rng(0)
    rows, cols = np.nonzero(mapped > 0)
    pick = rng.choice(rows.size, 80, replace=False)
    x, y = TRANSFORM @ (cols[pick] + 0.5, rows[pick] + 0.5)
    ref = [NAMES[int(v)].upper() for v in truth[rows[pick], cols[pick]]]  # names compared case-insensitively
    gpd.GeoDataFrame({"truth": ref}, geometry=gpd.points_from_xy(x, y), crs="EPSG:32617").to_file(
        tmp_path / "p.gpkg"
    )
    res = assess_sample(path, tmp_path / "p.gpkg", reference_field="truth", output=tmp_path / "a.json")
    assert res["design"]["design"].startswith("unknown (plain point layer")
    assert "strata = map classes" in res["design"]["estimator"]
    assert [s["pixels"] for s in res["strata"]] == np.bincount(mapped.ravel(), minlength=4)[1:].tolist()
    assert res["n"] == 80


def test_assess_errors(scene, tmp_path: Path) -> None:
    path, mapped, truth = scene
    s = draw_sample(path, tmp_path / "s.gpkg", n=30, min_per_class=5, seed=0).path
    with pytest.raises(InputError, match="30 of 30 samples have no reference class"):
        assess_sample(path, s)
    _label(s, truth)
    _edit(s, 1, reference=None)
    with pytest.raises(InputError, match="1 of 30 samples have no reference class"):
        assess_sample(path, s)
    res = assess_sample(path, s, skip_unlabelled=True)
    assert res["n"] == 29 and "left out" in res["notes"][0]
    _edit(s, 1, reference="glacier")
    with pytest.raises(InputError, match=r"\['glacier'\].*not classes of the map"):
        assess_sample(path, s)
    _edit(s, 1, reference="forest")
    stratum = int(gpd.read_file(s, layer="samples").set_index("id").loc[2, "stratum"])
    _edit(s, 2, map_code=9)
    with pytest.raises(InputError, match="do not match the map"):
        assess_sample(path, s)
    _edit(s, 2, map_code=stratum)
    assess_sample(path, s)  # repaired
    changed = mapped.copy()
    changed[changed == 3] = 1
    other = write_tif(tmp_path / "changed.tif", changed, crs="EPSG:32617", transform=TRANSFORM, nodata=0)
    with pytest.raises(InputError, match="the map changed"):
        assess_sample(other, s)
    with pytest.raises(InputError, match="is an input"):
        assess_sample(path, s, output=s)


def test_strata_with_fewer_than_two_samples_and_points_on_nodata(scene, tmp_path: Path) -> None:
    path, mapped, truth = scene
    rows, cols = np.nonzero(mapped == 3)
    pts = (
        [(rows[0], cols[0])]
        + [tuple(p) for p in np.argwhere(mapped == 1)[:5]]
        + [tuple(p) for p in np.argwhere(mapped == 2)[:5]]
    )
    x, y = TRANSFORM @ (np.array([c for _, c in pts]) + 0.5, np.array([r for r, _ in pts]) + 0.5)
    ref = [NAMES[int(truth[r, c])] for r, c in pts]
    gpd.GeoDataFrame({"reference": ref}, geometry=gpd.points_from_xy(x, y), crs="EPSG:32617").to_file(
        tmp_path / "p.gpkg"
    )
    with pytest.raises(InputError, match="'water' have only 1 sample"):
        assess_sample(path, tmp_path / "p.gpkg")
    x0, y0 = TRANSFORM @ (0.5, 0.5)  # nodata corner
    gpd.GeoDataFrame(
        {"reference": ["forest"]}, geometry=gpd.points_from_xy([x0], [y0]), crs="EPSG:32617"
    ).to_file(tmp_path / "n.gpkg")
    with pytest.raises(InputError, match="nodata"):
        assess_sample(path, tmp_path / "n.gpkg")


def test_sample_errors(scene, tmp_path: Path) -> None:
    path, _, _ = scene
    draw_sample(path, tmp_path / "s.gpkg", n=10)
    with pytest.raises(OutputError, match="exists"):
        draw_sample(path, tmp_path / "s.gpkg", n=10)
    with pytest.raises(InputError, match="min-per-class"):
        draw_sample(path, tmp_path / "t.gpkg", n=10, min_per_class=50)
    with pytest.raises(OutputError, match=r"\.gpkg"):
        draw_sample(path, tmp_path / "t.csv", n=10)


def test_cli_contract(scene, tmp_path: Path) -> None:
    path, _, truth = scene
    s, out = tmp_path / "samples.gpkg", tmp_path / "assessment.json"
    argv = [
        "sample",
        str(path),
        "-o",
        str(s),
        "--design",
        "stratified",
        "--n",
        "500",
        "--min-per-class",
        "50",
        "--seed",
        "0",
    ]
    assert main(argv) == 0
    d = read_design(s)
    assert d is not None and d["n"] == 500 and min(x["samples"] for x in d["strata"]) >= 50
    assert d["n_eq13"] == 1600  # printed beside the allocation
    assess = ["assess", str(path), "--samples", str(s), "--reference-field", "reference", "-o", str(out)]
    assert main(assess) == 2  # unlabelled: one line, exit code 2
    _label(s, truth)
    assert main(assess) == 0
    res = json.loads(out.read_text())
    assert res["n"] == 500 and 0.5 < res["overall_accuracy"]["estimate"] <= 1
    assert main(assess) == 2  # the output exists
    assert main([*assess, "--overwrite", "--confidence", "0.9"]) == 0
    assert json.loads(out.read_text())["z"] == pytest.approx(1.6449, abs=1e-4)


@pytest.mark.realdata
def test_real_float_map_with_nodata_assessed_against_itself(shared_data: Path, tmp_path: Path) -> None:
    """landclass_7.tif (float32 codes, nodata -99999) as the map and as the reference: every estimate is
    exact (OA 1, estimated = mapped areas, zero standard errors) and no point lies on nodata."""
    path = shared_data / "landcover_nc" / "landclass_7.tif"
    with rasterio.open(path) as ds:
        data = ds.read(1)
        valid = ds.read_masks(1) > 0
    res = draw_sample(path, tmp_path / "s.gpkg", n=200, min_per_class=10, seed=1)
    d = res.design
    assert d["pixels"] == int(valid.sum())
    assert {s["code"]: s["pixels"] for s in d["strata"]} == {
        int(c): int((data[valid] == c).sum()) for c in np.unique(data[valid])
    }
    g = gpd.read_file(res.path, layer="samples")
    assert valid[g["row"], g["col"]].all()
    g["reference"] = [str(int(v)) for v in data[g["row"], g["col"]]]
    _rewrite(res.path, g)
    out = assess_sample(path, res.path)
    assert out["overall_accuracy"]["estimate"] == pytest.approx(1.0)
    assert out["overall_accuracy"]["se"] == pytest.approx(0.0, abs=1e-12)
    for c in out["per_class"].values():
        assert c["area_pixels"]["estimate"] == pytest.approx(c["mapped_pixels"])
        assert c["area_pixels"]["se"] == pytest.approx(0.0, abs=1e-9)


def test_a_resaved_map_with_the_same_pixels_is_accepted_with_a_note(scene, tmp_path: Path) -> None:
    path, mapped, truth = scene
    s = draw_sample(path, tmp_path / "s.gpkg", n=40, min_per_class=5, seed=0).path
    _label(s, truth)
    assert assess_sample(path, s)["notes"] == []
    copy = write_tif(
        tmp_path / "copy.tif", mapped, crs="EPSG:32617", transform=TRANSFORM, nodata=0, compress="deflate"
    )
    with rasterio.open(copy, "r+") as ds:
        ds.update_tags(classes=json.dumps(SCHEMA.to_dict()))
    res = assess_sample(copy, s)
    assert "other checksum" in res["notes"][0]


def test_end_to_end_estimates_are_unbiased_over_repeated_samples(scene, tmp_path: Path) -> None:
    """Sample -> label -> assess, 25 times: the mean area estimate of every class is within 3 standard
    errors of the mean of the true area, and most 95 % intervals contain it (the pure-numpy simulation in
    test_assess_design checks the coverage rate precisely)."""
    path, mapped, truth = scene
    valid = mapped > 0
    true_px = np.bincount(truth[valid], minlength=4)[1:]
    reps, est, covered = 25, [], np.zeros(3)
    for seed in range(reps):
        s = draw_sample(path, tmp_path / f"s{seed}.fgb", n=60, min_per_class=15, seed=100 + seed).path
        g = gpd.read_file(s)  # FlatGeobuf (design in s{seed}.fgb.design.json): faster to write than GPKG
        g["reference"] = [NAMES[int(c)] for c in truth[g["row"], g["col"]]]
        g.to_file(s)
        res = assess_sample(path, s)
        a = [res["per_class"][n]["area_pixels"] for n in ("forest", "crops", "water")]
        est.append([x["estimate"] for x in a])
        covered += [x["ci_low"] <= t <= x["ci_high"] for x, t in zip(a, true_px, strict=True)]
    est_a = np.array(est)
    sem = est_a.std(axis=0, ddof=1) / np.sqrt(reps)
    assert np.all(np.abs(est_a.mean(axis=0) - true_px) < 3 * sem), (est_a.mean(axis=0), true_px, sem)
    assert np.all(covered >= 0.8 * reps), covered
    # the mapped pixel counts are biased for this map (random errors move area from the large classes
    # to the small one); the estimates are not
    mapped_px = np.bincount(mapped[valid], minlength=4)[1:]
    assert abs(mapped_px[2] - true_px[2]) > 5 * sem[2]


def test_systematic_lattice_and_lost_designs_are_checked(scene, tmp_path: Path) -> None:
    path, mapped, truth = scene
    res = draw_sample(path, tmp_path / "y.fgb", design="systematic", n=60, seed=3)
    g = gpd.read_file(res.path)
    g["reference"] = [NAMES[int(c)] for c in truth[g["row"], g["col"]]]
    g.to_file(res.path)
    out = assess_sample(path, res.path)
    assert out["design"]["design"] == "systematic" and out["n"] == len(g) and out["notes"] == []
    # a point moved off the lattice (to a valid pixel of the same class) no longer matches the design
    step, (r0, _) = res.design["step"], res.design["offset"]
    rows = np.arange(48)[:, None] * np.ones((1, 64), dtype=int)
    nr, nc = np.argwhere((mapped == int(g["map_code"][0])) & ((rows - r0) % step != 0))[0]
    x, y = TRANSFORM @ (float(nc) + 0.5, float(nr) + 0.5)
    g.geometry = gpd.GeoSeries([Point(x, y), *g.geometry.iloc[1:]], crs=g.crs)
    g.to_file(res.path)
    with pytest.raises(InputError, match="not on the systematic lattice"):
        assess_sample(path, res.path)
    # without its design record the same file is a plain layer, with a warning and a note
    (tmp_path / "y.fgb.design.json").unlink()
    plain = assess_sample(path, res.path)
    assert plain["design"]["design"].startswith("unknown") and "carries no design" in plain["notes"][0]
