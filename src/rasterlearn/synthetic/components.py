"""Scene components in pixel space (x = col, y = row, units = pixels): smooth noise, fields, forest,
water, roads, buildings and the nodata corner, each from its own random stream."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from affine import Affine
from scipy import ndimage

from rasterlearn.synthetic.spec import (
    _CROP_P,
    _CROPS,
    _ROOF_P,
    _ROOFS,
    BUILDING,
    FIELD,
    IGNORE,
    ROAD,
    _rng,
)


# ---------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------
def _noise(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    """Smooth zero-mean, unit-std noise with features about ``scale_px`` pixels across (float32).

    White noise on a lattice ``scale_px`` apart, interpolated with separable Gaussian weights (two small
    matrix products: fast, and identical on every run).
    """
    h, w = shape
    step = min(max(float(scale_px), 1.0), float(max(h, w)))  # larger features are plain gradients
    ch, cw = math.ceil(h / step) + 4, math.ceil(w / step) + 4
    coarse = rng.standard_normal((ch, cw))
    if step <= 1.0:
        out = coarse[:h, :w].astype(np.float32)
    else:
        out = (_interp_weights(h, ch, step) @ coarse @ _interp_weights(w, cw, step).T).astype(np.float32)
    std = float(out.std())
    return (out - float(out.mean())) / (std if std > 0 else 1.0)


def _interp_weights(n_out: int, n_in: int, step: float) -> np.ndarray:
    pos = (np.arange(n_out) + 0.5) / step + 2.0  # lattice coordinates, two lattice cells of margin
    weights = np.exp(-0.5 * ((pos[:, None] - np.arange(n_in)[None, :]) / 0.6) ** 2)
    return weights / weights.sum(axis=1, keepdims=True)


def _rasterize_pixels(
    shapes: list[tuple[Any, int]], shape: tuple[int, int], *, all_touched: bool = False, dtype: str = "int32"
) -> np.ndarray:
    """Rasterize geometries given in pixel coordinates (x = col, y = row); later shapes win."""
    from rasterio.features import rasterize

    if not shapes:
        return np.zeros(shape, dtype=dtype)
    return rasterize(
        shapes, out_shape=shape, transform=Affine.identity(), fill=0, all_touched=all_touched, dtype=dtype
    )


# ---------------------------------------------------------------------------------------------------------
# scene components (pixel space: x = col, y = row, units = pixels)
# ---------------------------------------------------------------------------------------------------------
@dataclass
class _Objects:
    """Per-object attributes indexed by object id (index 0 unused), grown component by component."""

    codes: list[int]
    materials: list[str]
    gain: list[float]  # per-object brightness factor
    row_amp: list[float]  # field tramline texture amplitude
    row_period: list[float]  # tramline period (px)
    row_phase: list[float]
    row_axis: list[int]  # 0: rows along v (stripes across u), 1: along u
    cx: list[float]  # building centre / roof ridge
    cy: list[float]
    nx: list[float]  # building ridge normal
    ny: list[float]
    gable: list[float]
    mix: list[float]  # forest: shift of the deciduous share

    @classmethod
    def empty(cls) -> _Objects:
        return cls(
            [IGNORE], ["road"], [1.0], [0.0], [1.0], [0.0], [0], [0.0], [0.0], [0.0], [0.0], [0.0], [0.0]
        )

    def add(self, code: int, material: str, gain: float = 1.0, **extra: float) -> int:
        self.codes.append(code)
        self.materials.append(material)
        self.gain.append(gain)
        for name in ("row_amp", "row_phase", "cx", "cy", "nx", "ny", "gable", "mix"):
            getattr(self, name).append(float(extra.get(name, 0.0)))
        self.row_period.append(float(extra.get("row_period", 1.0)))
        self.row_axis.append(int(extra.get("row_axis", 0)))
        return len(self.codes) - 1

    def array(self, name: str, dtype: str = "float32") -> np.ndarray:
        return np.asarray(getattr(self, name), dtype=dtype)


def _fields(
    seed: int, shape: tuple[int, int], ppm: float, objs: _Objects, rr: np.ndarray, cc: np.ndarray
) -> tuple[np.ndarray, float, np.ndarray, np.ndarray, list[float]]:
    """Rectangular parcels in a rotated frame; returns (ids, angle, u, v, strip cuts usable as farm roads)."""
    rng = _rng(seed, "fields")
    h, w = shape
    theta = math.radians(rng.uniform(-25.0, 25.0))
    cos, sin = math.cos(theta), math.sin(theta)
    u = cc * cos + rr * sin
    v = -cc * sin + rr * cos
    corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], dtype=float)
    us = corners[:, 0] * cos + corners[:, 1] * sin
    vs = -corners[:, 0] * sin + corners[:, 1] * cos
    umin, umax, vmin, vmax = us.min() - 1, us.max() + 1, vs.min() - 1, vs.max() + 1

    def cuts(lo: float, hi: float, small: float, large: float) -> np.ndarray:
        n = int((hi - lo) / small) + 2
        steps = rng.uniform(small, large, size=n)
        pos = lo + np.cumsum(steps)
        return pos[pos < hi]

    ucuts = cuts(umin, umax, 70 * ppm, 190 * ppm)
    strip = np.searchsorted(ucuts, u)
    ids = np.zeros(shape, dtype=np.int32)
    for s in range(len(ucuts) + 1):
        vcuts = cuts(vmin, vmax, 90 * ppm, 320 * ppm)
        inside = strip == s
        if not inside.any():
            continue
        local = np.searchsorted(vcuts, v[inside])
        first = len(objs.codes)
        for _ in range(len(vcuts) + 1):
            crop = str(rng.choice(_CROPS, p=_CROP_P))
            amp = {"bare_soil": 0.10, "grassland": 0.03}.get(crop, 0.07) * rng.uniform(0.5, 1.5)
            objs.add(
                FIELD,
                crop,
                gain=rng.uniform(0.9, 1.1),
                row_amp=amp,
                row_period=rng.uniform(6.0, 14.0) * ppm,
                row_phase=rng.uniform(0, 2 * math.pi),
                row_axis=int(rng.integers(0, 2)),
            )
        ids[inside] = first + local
    interior = [float(c) for c in ucuts if umin + 40 * ppm < c < umax - 40 * ppm]
    return ids, theta, u, v, interior


def _forest(seed: int, shape: tuple[int, int], ppm: float, target: float) -> np.ndarray:
    """Forest mask: thresholded low-frequency noise with rough edges, small bits and holes removed."""
    rng = _rng(seed, "forest")
    field = _noise(rng, shape, 160 * ppm) + 0.25 * _noise(rng, shape, 14 * ppm)
    mask = field > np.quantile(field, 1.0 - target)
    mask = _morph(mask, ndimage.binary_opening, 2)
    mask = _morph(mask, ndimage.binary_closing, 2)
    mask = _drop_small(mask, min(int(400 * ppm**2) + 10, mask.size // 50))  # drop patches under ~400 m2
    holes = _drop_small(~mask, 60)
    return ~holes


def _morph(mask: np.ndarray, op: Any, iterations: int) -> np.ndarray:
    """A binary morphology ``op`` that treats the outside as a continuation of the edge (no border bands)."""
    padded = np.pad(mask, iterations + 1, mode="edge")
    k = iterations + 1
    return op(padded, iterations=iterations)[k:-k, k:-k]


def _drop_small(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    lab, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[lab]


def _water(seed: int, shape: tuple[int, int], ppm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """River (meandering band across the scene) and a lake; returns (river, lake, distance to bank in px)."""
    from shapely import LineString

    rng = _rng(seed, "water")
    h, w = shape
    horizontal = bool(rng.integers(0, 2))
    length, across = (w, h) if horizontal else (h, w)
    t = np.linspace(-0.1 * length, 1.1 * length, 400)
    base = rng.uniform(0.3, 0.7) * across
    tilt = rng.uniform(-0.25, 0.25) * across
    wave = rng.uniform(0.05, 0.10) * across * np.sin(
        2 * np.pi * t / rng.uniform(0.6, 1.0) / length + rng.uniform(0, 2 * np.pi)
    ) + rng.uniform(0.01, 0.04) * across * np.sin(
        2 * np.pi * t / rng.uniform(0.15, 0.3) / length + rng.uniform(0, 2 * np.pi)
    )
    off = base + tilt * (t / length - 0.5) + wave
    xy = np.column_stack([t, off] if horizontal else [off, t])
    centre = _rasterize_pixels([(LineString(xy), 1)], shape, all_touched=True) > 0
    dist = ndimage.distance_transform_edt(~centre)
    half = rng.uniform(12.0, 20.0) * ppm * (1 + 0.25 * _noise(rng, shape, 60 * ppm))
    river = dist < half

    rr, cc = np.ogrid[0:h, 0:w]
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    a = min(rng.uniform(100, 170) * ppm, 0.22 * w)
    b = min(a * rng.uniform(0.5, 0.9), 0.22 * h)
    ang = rng.uniform(0, np.pi)
    dx, dy = cc - cx, rr - cy
    e = np.hypot(
        (dx * math.cos(ang) + dy * math.sin(ang)) / a, (-dx * math.sin(ang) + dy * math.cos(ang)) / b
    )
    lake = e < 1.0 + 0.22 * _noise(rng, shape, 25 * ppm)
    lake = _drop_small(lake, 40)
    lab, n = ndimage.label(lake)
    if n > 1:  # keep the main body
        lake = lab == (1 + int(np.argmax(np.bincount(lab.ravel())[1:])))
    lake &= ~river
    water = river | lake
    bank = ndimage.distance_transform_edt(water).astype(np.float32)
    return river, lake, bank


def _roads(
    seed: int, shape: tuple[int, int], ppm: float, theta: float, cuts: list[float], objs: _Objects
) -> tuple[np.ndarray, list[Any], tuple[float, float]]:
    """Two curved main roads crossing the scene and 1-3 farm roads along parcel edges.

    Returns (object ids, road centre lines with half widths, village centre).
    """
    from shapely import LineString, box

    rng = _rng(seed, "roads")
    h, w = shape
    lines: list[tuple[Any, float]] = []
    first_along_x = bool(rng.integers(0, 2))
    for k in range(2):  # two main roads, roughly perpendicular
        along_x = first_along_x if k == 0 else not first_along_x
        length, across = (w, h) if along_x else (h, w)
        t = np.linspace(-0.05 * length, 1.05 * length, 200)
        pos = (
            rng.uniform(0.2, 0.8) * across
            + rng.uniform(-0.2, 0.2) * across * (t / length - 0.5)
            + rng.uniform(0.02, 0.06)
            * across
            * np.sin(2 * np.pi * t / length * rng.uniform(0.4, 1.0) + rng.uniform(0, 2 * np.pi))
        )
        xy = np.column_stack([t, pos] if along_x else [pos, t])
        lines.append((LineString(xy), rng.uniform(3.5, 4.5) * ppm))
    frame = box(-5, -5, w + 5, h + 5)
    cos, sin = math.cos(theta), math.sin(theta)
    n_farm = int(rng.integers(1, 4))
    picks: list[int] = (
        rng.choice(len(cuts), size=min(n_farm, len(cuts)), replace=False).tolist() if cuts else []
    )
    big = 2.0 * (h + w)
    for i in sorted(int(p) for p in picks):
        c = cuts[i]
        vv = np.array([-big, big])
        seg = LineString(np.column_stack([c * cos - vv * sin, c * sin + vv * cos])).intersection(frame)
        if not seg.is_empty and seg.length > 20:
            lines.append((seg, rng.uniform(2.2, 3.0) * ppm))
    # the village: at the crossroads of the main roads when they cross inside the scene, with side streets
    main = lines[0][0]
    cross = main.intersection(lines[1][0])
    if cross.geom_type == "Point" and 0.15 * w < cross.x < 0.85 * w and 0.15 * h < cross.y < 0.85 * h:
        village = cross
    else:
        village = main.interpolate(rng.uniform(0.3, 0.7), normalized=True)
    along = main.interpolate(main.project(village) + 1.0)
    base = math.atan2(along.y - village.y, along.x - village.x)
    for k in range(int(rng.integers(2, 4))):
        start = main.interpolate(main.project(village) + rng.uniform(-120, 120) * ppm)
        ang = base + (math.pi / 2 if k % 2 == 0 else -math.pi / 2) + math.radians(rng.normal(0, 10))
        reach = rng.uniform(120, 260) * ppm
        street = LineString(
            [(start.x, start.y), (start.x + reach * math.cos(ang), start.y + reach * math.sin(ang))]
        ).intersection(frame)
        if not street.is_empty and street.geom_type == "LineString" and street.length > 10 * ppm:
            lines.append((street, rng.uniform(2.5, 3.2) * ppm))
    shapes = []
    for line, half in lines:
        oid = objs.add(ROAD, "road", gain=rng.uniform(0.85, 1.15))
        shapes.append((line.buffer(half, cap_style="flat"), oid))
    ids = _rasterize_pixels(shapes, shape)
    return ids, lines, (village.x, village.y)


def _buildings(
    seed: int,
    shape: tuple[int, int],
    ppm: float,
    lines: list[tuple[Any, float]],
    village: tuple[float, float],
    blocked: np.ndarray,
    objs: _Objects,
) -> np.ndarray:
    """Rotated rectangles beside the roads, dense in the village and sparse elsewhere."""
    import shapely

    rng = _rng(seed, "buildings")
    cands: list[np.ndarray] = []
    info: list[tuple[Any, ...]] = []
    for line, half in lines:
        spacing = 16.0 * ppm
        d = np.arange(rng.uniform(0, spacing), line.length, spacing)
        if d.size == 0:
            continue
        p = shapely.get_coordinates(shapely.line_interpolate_point(line, d))
        q = shapely.get_coordinates(shapely.line_interpolate_point(line, np.minimum(d + 1.0, line.length)))
        r = shapely.get_coordinates(shapely.line_interpolate_point(line, np.maximum(d - 1.0, 0.0)))
        tan = q - r
        tan /= np.maximum(np.linalg.norm(tan, axis=1, keepdims=True), 1e-9)
        nrm = np.column_stack([-tan[:, 1], tan[:, 0]])
        dv = np.hypot(p[:, 0] - village[0], p[:, 1] - village[1]) / ppm  # metres
        prob = 0.08 + 0.9 * np.exp(-((dv / 300.0) ** 2))
        # a front row by the road, and in the village a second row behind it
        for side, row in ((-1.0, 0), (1.0, 0), (-1.0, 1), (1.0, 1)):
            wanted = rng.random(len(d)) < (prob if row == 0 else 0.8 * prob * (dv < 350))
            length = rng.uniform(10.0, 24.0, len(d)) * ppm
            depth = rng.uniform(8.0, 14.0, len(d)) * ppm
            setback = rng.uniform(4.0, 12.0, len(d)) * ppm + row * rng.uniform(24.0, 34.0, len(d)) * ppm
            jitter = np.radians(rng.normal(0.0, 4.0, len(d)))
            roof = rng.choice(len(_ROOFS), size=len(d), p=_ROOF_P)
            gable = rng.uniform(0.04, 0.12, len(d))
            gain = rng.uniform(0.85, 1.15, len(d))
            centre = p + side * nrm * (half + setback + depth / 2)[:, None]
            cj, sj = np.cos(jitter), np.sin(jitter)
            ax = np.column_stack([tan[:, 0] * cj - tan[:, 1] * sj, tan[:, 0] * sj + tan[:, 1] * cj])
            ay = np.column_stack([-ax[:, 1], ax[:, 0]])
            hl, hd = (length / 2)[:, None], (depth / 2)[:, None]
            corners = np.stack(
                [
                    centre + ax * hl + ay * hd,
                    centre - ax * hl + ay * hd,
                    centre - ax * hl - ay * hd,
                    centre + ax * hl - ay * hd,
                ],
                axis=1,
            )
            cands.append(corners)
            for j in range(len(d)):
                info.append(
                    (
                        centre[j, 0],
                        centre[j, 1],
                        ay[j, 0],
                        ay[j, 1],
                        gable[j],
                        _ROOFS[roof[j]],
                        gain[j],
                        bool(wanted[j]),
                    )
                )
    if not cands:
        return np.zeros(shape, dtype=np.int32)
    polys = shapely.polygons(np.concatenate(cands))
    wanted_idx = [i for i, rec in enumerate(info) if rec[-1]]
    kept = _place_buildings(polys, wanted_idx, shape, blocked, ppm)
    if not kept:  # a small scene without a surviving building: try every candidate position
        kept = _place_buildings(polys, list(range(len(polys))), shape, blocked, ppm)
    shapes = []
    for i in kept:
        cx, cy, nx, ny, gbl, roof_name, gn, _ = info[i]
        oid = objs.add(BUILDING, roof_name, gain=gn, cx=cx, cy=cy, nx=nx, ny=ny, gable=gbl)
        shapes.append((polys[i], oid))
    return _rasterize_pixels(shapes, shape)


def _place_buildings(
    polys: np.ndarray, order: list[int], shape: tuple[int, int], blocked: np.ndarray, ppm: float
) -> list[int]:
    """Candidates (in ``order``) that keep a gap to the earlier ones and touch neither roads nor water."""
    import shapely

    gap = 2.5 * ppm
    kept: list[int] = []
    for i in order:  # greedy: a candidate survives when it keeps a gap to the earlier ones
        if kept and shapely.intersects(polys[kept], polys[i].buffer(gap)).any():
            continue
        kept.append(i)
    if not kept:
        return kept
    ids = _rasterize_pixels([(polys[i], k + 1) for k, i in enumerate(kept)], shape)
    n = len(kept) + 1
    clash = np.bincount(ids[blocked], minlength=n) > 0
    size = np.bincount(ids.ravel(), minlength=n)
    bad = clash | (size < max(4, int(40 * ppm**2)))  # touching a road or water, or under ~40 m2 (off-scene)
    return [i for k, i in enumerate(kept) if not bad[k + 1]]


def _corner(seed: int, shape: tuple[int, int]) -> np.ndarray:
    """Valid mask with a triangular nodata corner (the rotated edge of a satellite scene)."""
    rng = _rng(seed, "corner")
    h, w = shape
    which = int(rng.integers(0, 4))
    a, b = rng.uniform(0.2, 0.35) * h, rng.uniform(0.2, 0.35) * w
    rr, cc = np.ogrid[0:h, 0:w]
    r = (rr + 0.5) if which in (0, 1) else (h - rr - 0.5)
    c = (cc + 0.5) if which in (0, 2) else (w - cc - 0.5)
    return (r / a + c / b) >= 1.0
