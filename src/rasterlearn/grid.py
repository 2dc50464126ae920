"""Immutable raster grids, pixel windows and tiling plans.

Pure value types: no file I/O here. A :class:`Grid` is the georeference of a raster (shape, affine
transform, CRS); a :class:`Window` is a rectangle of pixels on some grid, allowed to extend past the
grid's edges (a *boundless* window, read with nodata fill). Every operation returns a new value.

Conventions: rows/cols are integers; ``Window(row_off, col_off, height, width)``; bounds are
``(left, bottom, right, top)`` in CRS units, as in rasterio.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from affine import Affine
from pyproj import CRS

from rasterlearn.errors import CRSError, InputError

__all__ = [
    "Bounds",
    "EdgePolicy",
    "Grid",
    "SnapMode",
    "TilePlan",
    "Window",
    "column_stripes",
    "plan_column_stripes",
    "plan_tiles",
    "tile_offsets",
]

Bounds = tuple[float, float, float, float]
EdgePolicy = Literal["pad", "shift"]
SnapMode = Literal["out", "in", "nearest"]

_EPS = 1e-9


@dataclass(frozen=True, slots=True, order=True)
class Window:
    """A rectangle of pixels: ``row_off``, ``col_off`` (may be negative) and ``height``, ``width`` (>= 0)."""

    row_off: int
    col_off: int
    height: int
    width: int

    def __post_init__(self) -> None:
        for name in ("row_off", "col_off", "height", "width"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or isinstance(value, bool):
                raise InputError(f"Window.{name} must be an integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.height < 0 or self.width < 0:
            raise InputError(f"Window height/width must be >= 0, got {self.height}x{self.width}")

    # -- derived values -------------------------------------------------------------------------
    @property
    def row_stop(self) -> int:
        return self.row_off + self.height

    @property
    def col_stop(self) -> int:
        return self.col_off + self.width

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def size(self) -> int:
        return self.height * self.width

    @property
    def is_empty(self) -> bool:
        return self.height == 0 or self.width == 0

    def slices(self) -> tuple[slice, slice]:
        """Row and column slices (valid only for a window inside the array it indexes)."""
        return (slice(self.row_off, self.row_stop), slice(self.col_off, self.col_stop))

    def to_tuple(self) -> tuple[int, int, int, int]:
        return (self.row_off, self.col_off, self.height, self.width)

    # -- arithmetic ----------------------------------------------------------------------------
    def intersection(self, other: Window) -> Window | None:
        """The overlap of two windows, or ``None`` when they do not overlap."""
        r0, c0 = max(self.row_off, other.row_off), max(self.col_off, other.col_off)
        r1, c1 = min(self.row_stop, other.row_stop), min(self.col_stop, other.col_stop)
        if r1 <= r0 or c1 <= c0:
            return None
        return Window(r0, c0, r1 - r0, c1 - c0)

    def intersects(self, other: Window) -> bool:
        return self.intersection(other) is not None

    def union(self, other: Window) -> Window:
        """The smallest window containing both."""
        r0, c0 = min(self.row_off, other.row_off), min(self.col_off, other.col_off)
        r1, c1 = max(self.row_stop, other.row_stop), max(self.col_stop, other.col_stop)
        return Window(r0, c0, r1 - r0, c1 - c0)

    def contains(self, other: Window) -> bool:
        return (
            self.row_off <= other.row_off
            and self.col_off <= other.col_off
            and self.row_stop >= other.row_stop
            and self.col_stop >= other.col_stop
        )

    def pad(
        self, top: int, left: int | None = None, bottom: int | None = None, right: int | None = None
    ) -> Window:
        """Grow (or, with negative values, shrink) the window on each side. One value pads all sides."""
        left = top if left is None else left
        bottom = top if bottom is None else bottom
        right = left if right is None else right
        return Window(
            self.row_off - top,
            self.col_off - left,
            max(0, self.height + top + bottom),
            max(0, self.width + left + right),
        )

    def shift(self, drow: int, dcol: int) -> Window:
        return Window(self.row_off + drow, self.col_off + dcol, self.height, self.width)

    def relative_to(self, origin: Window) -> Window:
        """This window in the pixel coordinates of ``origin`` (whose top-left becomes 0, 0)."""
        return Window(self.row_off - origin.row_off, self.col_off - origin.col_off, self.height, self.width)

    def clip(self, height: int, width: int) -> Window:
        """The part of the window inside an array of ``height`` x ``width`` (may be empty)."""
        inter = self.intersection(Window(0, 0, height, width))
        return (
            inter
            if inter is not None
            else Window(max(0, min(self.row_off, height)), max(0, min(self.col_off, width)), 0, 0)
        )

    def scale(self, factor: int) -> Window:
        """Integer down-scaling by ``factor`` (e.g. to a feature grid); offsets/sizes must divide evenly."""
        parts = (self.row_off, self.col_off, self.height, self.width)
        if any(p % factor for p in parts):
            raise InputError(f"{self} is not aligned to a factor of {factor}")
        return Window(*(p // factor for p in parts))


@dataclass(frozen=True, slots=True)
class Grid:
    """The georeference of a raster: ``height`` x ``width`` pixels, ``transform`` and ``crs``.

    ``crs`` may be ``None`` for unreferenced rasters (pixel-coordinate transforms).
    """

    height: int
    width: int
    transform: Affine
    crs: CRS | None = field(default=None)

    def __post_init__(self) -> None:
        if self.height <= 0 or self.width <= 0:
            raise InputError(f"Grid must have a positive size, got {self.height}x{self.width}")
        object.__setattr__(self, "height", int(self.height))
        object.__setattr__(self, "width", int(self.width))
        if not isinstance(self.transform, Affine):
            object.__setattr__(self, "transform", Affine(*tuple(self.transform)[:6]))
        if self.crs is not None and not isinstance(self.crs, CRS):
            try:
                object.__setattr__(self, "crs", CRS.from_user_input(self.crs))
            except Exception as exc:  # pyproj raises its own CRSError
                raise CRSError(f"Unknown CRS {self.crs!r}: give an EPSG code ('EPSG:32633') or WKT") from exc
        if abs(self.transform.determinant) < 1e-300:
            raise InputError(f"Grid transform is degenerate (zero pixel size): {tuple(self.transform)[:6]}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Grid):
            return NotImplemented
        return (
            self.shape == other.shape
            and self.transform.almost_equals(other.transform, precision=1e-9)
            and _crs_equal(self.crs, other.crs)
        )

    def __hash__(self) -> int:
        return hash((self.height, self.width, tuple(round(v, 9) for v in self.transform[:6])))

    # -- derived values -------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def window(self) -> Window:
        """The full-grid window."""
        return Window(0, 0, self.height, self.width)

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size (x, y) as positive numbers in CRS units (for rotated grids, the column/row lengths)."""
        t = self.transform
        return (math.hypot(t.a, t.d), math.hypot(t.b, t.e))

    @property
    def is_rectilinear(self) -> bool:
        """True for north-up grids without rotation or shear (``b == d == 0``)."""
        return abs(self.transform.b) < _EPS and abs(self.transform.d) < _EPS

    @property
    def bounds(self) -> Bounds:
        return self.window_bounds(self.window)

    @property
    def is_geographic(self) -> bool:
        return bool(self.crs is not None and self.crs.is_geographic)

    @property
    def epsg(self) -> int | None:
        return None if self.crs is None else self.crs.to_epsg()

    # -- windows <-> coordinates ----------------------------------------------------------------
    def window_transform(self, window: Window) -> Affine:
        """The affine transform of a window's top-left pixel."""
        return self.transform @ Affine.translation(window.col_off, window.row_off)

    def window_bounds(self, window: Window) -> Bounds:
        """``(left, bottom, right, top)`` of a window, for any (also rotated) transform."""
        t = self.transform
        xs, ys = [], []
        for r, c in (
            (window.row_off, window.col_off),
            (window.row_off, window.col_stop),
            (window.row_stop, window.col_off),
            (window.row_stop, window.col_stop),
        ):
            x, y = t @ (c, r)
            xs.append(x)
            ys.append(y)
        return (min(xs), min(ys), max(xs), max(ys))

    def subgrid(self, window: Window) -> Grid:
        """The grid of a window (same CRS and resolution, shifted origin)."""
        if window.is_empty:
            raise InputError(f"Cannot make a grid of the empty window {window}")
        return Grid(window.height, window.width, self.window_transform(window), self.crs)

    def window_for_bounds(self, bounds: Bounds, snap: SnapMode = "out") -> Window:
        """The window covering ``bounds`` on this grid (not clipped to the grid).

        ``snap="out"`` includes every pixel the bounds touch, ``"in"`` only pixels fully inside,
        ``"nearest"`` rounds edges to the nearest pixel boundary.
        """
        left, bottom, right, top = bounds
        if right < left or top < bottom:
            raise InputError(
                f"Bounds must be (left, bottom, right, top) with left<=right, bottom<=top; got {bounds}"
            )
        inv = ~self.transform
        cols, rows = [], []
        for x, y in ((left, top), (right, top), (left, bottom), (right, bottom)):
            c, r = inv @ (x, y)
            cols.append(c)
            rows.append(r)
        r0, r1, c0, c1 = min(rows), max(rows), min(cols), max(cols)
        if snap == "out":
            fr0, fc0, fr1, fc1 = (
                math.floor(r0 + 1e-6),
                math.floor(c0 + 1e-6),
                math.ceil(r1 - 1e-6),
                math.ceil(c1 - 1e-6),
            )
        elif snap == "in":
            fr0, fc0, fr1, fc1 = (
                math.ceil(r0 - 1e-6),
                math.ceil(c0 - 1e-6),
                math.floor(r1 + 1e-6),
                math.floor(c1 + 1e-6),
            )
        elif snap == "nearest":
            fr0, fc0, fr1, fc1 = round(r0), round(c0), round(r1), round(c1)
        else:
            raise InputError(f"snap must be one of 'out', 'in', 'nearest'; got {snap!r}")
        return Window(fr0, fc0, max(0, fr1 - fr0), max(0, fc1 - fc0))

    def xy(self, row: float, col: float, offset: Literal["center", "ul"] = "center") -> tuple[float, float]:
        """CRS coordinates of a pixel (its centre by default)."""
        d = 0.5 if offset == "center" else 0.0
        x, y = self.transform @ (col + d, row + d)
        return (float(x), float(y))

    def rowcol(self, x: np.ndarray | float, y: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Integer (row, col) of the pixels containing CRS coordinates (floor; may be off-grid)."""
        inv = ~self.transform
        xa, ya = np.asarray(x, dtype="float64"), np.asarray(y, dtype="float64")
        cols = inv.a * xa + inv.b * ya + inv.c
        rows = inv.d * xa + inv.e * ya + inv.f
        return np.floor(rows + 1e-9).astype("int64"), np.floor(cols + 1e-9).astype("int64")

    def is_aligned_with(self, other: Grid) -> bool:
        """True when both grids share CRS, pixel size/rotation and pixel edges (offsets are whole pixels)."""
        if not _crs_equal(self.crs, other.crs):
            return False
        a, b = self.transform, other.transform
        if not (
            math.isclose(a.a, b.a, rel_tol=1e-9)
            and math.isclose(a.e, b.e, rel_tol=1e-9)
            and abs(a.b - b.b) < 1e-12
            and abs(a.d - b.d) < 1e-12
        ):
            return False
        c, r = (~self.transform) @ (b.c, b.f)
        return abs(c - round(c)) < 1e-6 and abs(r - round(r)) < 1e-6

    def window_of(self, other: Grid) -> Window:
        """The window that an aligned ``other`` grid occupies on this grid."""
        if not self.is_aligned_with(other):
            raise InputError(
                "Grids are not aligned (different CRS, resolution or pixel edges); resample first"
            )
        c, r = (~self.transform) @ (other.transform.c, other.transform.f)
        return Window(round(r), round(c), other.height, other.width)

    def scaled(self, factor: float) -> Grid:
        """A coarser (factor > 1) or finer (< 1) grid over the same origin, e.g. a feature grid.

        The new shape is ``ceil(shape / factor)``, so every input pixel falls in an output pixel.
        """
        if factor <= 0:
            raise InputError(f"scale factor must be positive, got {factor}")
        h = max(1, math.ceil(self.height / factor - 1e-9))
        w = max(1, math.ceil(self.width / factor - 1e-9))
        return Grid(h, w, self.transform @ Affine.scale(factor), self.crs)

    def snap_window(self, window: Window, multiple: int) -> Window:
        """Grow ``window`` so its offsets and far edges fall on multiples of ``multiple`` pixels."""
        r0 = (window.row_off // multiple) * multiple
        c0 = (window.col_off // multiple) * multiple
        r1 = -(-window.row_stop // multiple) * multiple
        c1 = -(-window.col_stop // multiple) * multiple
        return Window(r0, c0, r1 - r0, c1 - c0)

    def to_dict(self) -> dict[str, object]:
        """A JSON-friendly description (CRS as WKT2 and EPSG when known)."""
        return {
            "height": self.height,
            "width": self.width,
            "transform": [float(v) for v in tuple(self.transform)[:6]],
            "crs": None if self.crs is None else self.crs.to_wkt(),
            "epsg": self.epsg,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Grid:
        crs = data.get("crs")
        return cls(
            int(data["height"]),
            int(data["width"]),
            Affine(*data["transform"][:6]),
            None if crs is None else CRS.from_user_input(crs),
        )

    @classmethod
    def from_bounds(
        cls, bounds: Bounds, res: float | tuple[float, float], crs: CRS | str | None = None
    ) -> Grid:
        """A north-up grid covering ``bounds`` at resolution ``res`` (edges snapped outwards)."""
        rx, ry = (res, res) if isinstance(res, int | float) else res
        left, bottom, right, top = bounds
        width = max(1, math.ceil((right - left) / rx - 1e-9))
        height = max(1, math.ceil((top - bottom) / ry - 1e-9))
        return cls(height, width, Affine(rx, 0.0, left, 0.0, -ry, top), crs)  # type: ignore[arg-type]


def _crs_equal(a: CRS | None, b: CRS | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if a is b:
        return True
    try:
        return bool(a == b) or bool(a.equals(b, ignore_axis_order=True))
    except Exception:  # pragma: no cover - pyproj edge cases
        return False


# -- tiling -------------------------------------------------------------------------------------


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, int | np.integer):
        pair = (int(value), int(value))
    else:
        seq = tuple(int(v) for v in value)
        if len(seq) != 2:
            raise InputError(f"{name} must be an integer or a (rows, cols) pair, got {value!r}")
        pair = (seq[0], seq[1])
    if pair[0] <= 0 or pair[1] <= 0:
        raise InputError(f"{name} must be positive, got {value!r}")
    return pair


def tile_offsets(length: int, size: int, stride: int, edge: EdgePolicy = "pad") -> list[int]:
    """Start offsets of tiles of ``size`` every ``stride`` pixels along an axis of ``length`` pixels.

    The count is ``1 + ceil(max(0, length - size) / stride)``: every pixel is covered, and a length
    smaller than one tile still gets one (padded) tile. With ``edge="pad"`` the last tile may extend past
    the end; with ``edge="shift"`` it is moved inward to end exactly at ``length`` (when ``length >= size``).
    """
    if length <= 0:
        raise InputError(f"axis length must be positive, got {length}")
    if size <= 0 or stride <= 0:
        raise InputError(f"tile size and stride must be positive, got size={size}, stride={stride}")
    if stride > size:
        raise InputError(
            f"stride ({stride}) is larger than the tile size ({size}): pixels between tiles would never be "
            f"covered; use a stride <= {size}"
        )
    count = 1 + math.ceil(max(0, length - size) / stride)
    offsets = [i * stride for i in range(count)]
    if edge == "shift" and length >= size:
        offsets[-1] = length - size
        # shifting can make the last two tiles coincide when (length - size) is a multiple of stride
        if len(offsets) > 1 and offsets[-1] == offsets[-2]:
            offsets.pop()
    elif edge not in ("pad", "shift"):
        raise InputError(f"edge policy must be 'pad' or 'shift', got {edge!r}")
    return offsets


@dataclass(frozen=True, slots=True)
class TilePlan:
    """A regular tiling of an extent window on a grid.

    Attributes:
        grid: the raster grid the windows refer to.
        size: tile (rows, cols).
        stride: step (rows, cols) between tile origins; overlap is ``size - stride``.
        edge: ``"pad"`` (tiles may extend past the extent; reads fill with nodata) or ``"shift"``.
        extent: the window to cover (default: the whole grid).
    """

    grid: Grid
    size: tuple[int, int]
    stride: tuple[int, int]
    edge: EdgePolicy = "pad"
    extent: Window | None = None

    @property
    def area(self) -> Window:
        return self.extent if self.extent is not None else self.grid.window

    @property
    def row_offsets(self) -> list[int]:
        a = self.area
        return [a.row_off + o for o in tile_offsets(a.height, self.size[0], self.stride[0], self.edge)]

    @property
    def col_offsets(self) -> list[int]:
        a = self.area
        return [a.col_off + o for o in tile_offsets(a.width, self.size[1], self.stride[1], self.edge)]

    @property
    def shape(self) -> tuple[int, int]:
        """Number of tile rows and columns."""
        return (len(self.row_offsets), len(self.col_offsets))

    def __len__(self) -> int:
        r, c = self.shape
        return r * c

    def __iter__(self) -> Iterator[Window]:
        cols = self.col_offsets
        for r in self.row_offsets:
            for c in cols:
                yield Window(r, c, self.size[0], self.size[1])

    @property
    def windows(self) -> list[Window]:
        return list(self)


def plan_tiles(
    grid: Grid,
    size: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    edge: EdgePolicy = "pad",
    extent: Window | Bounds | None = None,
) -> TilePlan:
    """Plan tiles of ``size`` every ``stride`` pixels (default: no overlap) covering ``extent``.

    ``extent`` may be a window or bounds in the grid's CRS (snapped outwards); it is clipped to the grid.

    Raises:
        InputError: stride larger than size, non-positive values, or an extent outside the grid.
    """
    size_p = _pair(size, "tile size")
    stride_p = size_p if stride is None else _pair(stride, "stride")
    for axis in (0, 1):
        if stride_p[axis] > size_p[axis]:
            raise InputError(
                f"stride {stride_p} is larger than the tile size {size_p}: pixels between tiles would never "
                f"be covered; use a stride <= the size"
            )
    if edge not in ("pad", "shift"):
        raise InputError(f"edge policy must be 'pad' or 'shift', got {edge!r}")
    win: Window | None = None
    if extent is not None:
        win = extent if isinstance(extent, Window) else grid.window_for_bounds(tuple(extent), snap="out")  # type: ignore[arg-type]
        clipped = win.intersection(grid.window)
        if clipped is None:
            raise InputError(
                f"extent {extent} does not overlap the grid {grid.window} / bounds {grid.bounds}"
            )
        win = clipped
    return TilePlan(grid, size_p, stride_p, edge, win)


def plan_column_stripes(
    col_start: int, col_stop: int, blocksize: int, bytes_per_col: float, memory_mb: float
) -> tuple[int, list[tuple[int, int]]]:
    """Split columns ``[col_start, col_stop)`` into stripes that fit a memory budget.

    A streaming stage holds a band of rows as wide as what it processes; on a wide raster that band alone
    can exceed the budget. Stripes bound it: each is a whole number of ``blocksize`` blocks wide (seams on
    the block grid counted from column 0, so output blocks never straddle two stripes; the first and last
    stripe are cut to the range), and holds at most ``memory_mb`` MiB at ``bytes_per_col`` bytes per
    column, but always at least one block.

    Returns:
        ``(stripe_width, [(start, stop), ...])``: the stripe width and the stripes, left to right.
    """
    if blocksize < 1 or col_stop <= col_start:
        raise InputError(
            f"need blocksize >= 1 and a non-empty column range, got {blocksize}, {col_start}..{col_stop}"
        )
    width = max(blocksize, int(memory_mb * 2**20 // max(bytes_per_col, 1e-9)) // blocksize * blocksize)
    return width, column_stripes(col_start, col_stop, width, blocksize)


def column_stripes(col_start: int, col_stop: int, width: int, blocksize: int) -> list[tuple[int, int]]:
    """Stripes of ``width`` columns (a multiple of ``blocksize``) with seams on the block grid counted from
    column 0, covering ``[col_start, col_stop)``; the first and last are cut to the range."""
    stripes: list[tuple[int, int]] = []
    s0 = (col_start // blocksize) * blocksize
    while s0 < col_stop:
        stripes.append((max(s0, col_start), min(s0 + width, col_stop)))
        s0 += width
    return stripes
