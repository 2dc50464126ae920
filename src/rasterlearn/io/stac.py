"""STAC items as scenes: chosen assets stacked as bands of one virtual raster (a GDAL VRT) on one grid.

A STAC item lists one file per band group (``B04``, ``B03``, ``B02`` … of a Sentinel-2 scene), often at
different resolutions. :func:`stac_stack` reads the item with pystac, resolves the chosen assets' hrefs
(relative hrefs against the item, URLs through GDAL's network handlers) and writes a VRT that places every
asset's bands, in the order asked, on one grid: the first asset's footprint at the finest resolution of the
chosen assets. Coarser assets are resampled onto it (bilinear by default; logged and recorded in the
VRT's metadata). The VRT lives in GDAL's in-memory file system unless a destination is given, so no file
appears anywhere; give ``dest`` when other processes (dask workers) must open it.

The stack records the item id and each asset's href (:meth:`StacStack.provenance`), which stages store in
their outputs' metadata.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.errors
from affine import Affine
from rasterio.io import MemoryFile

from rasterlearn._util import atomic_write_text
from rasterlearn.errors import ConfigError, InputError, InputNotFoundError
from rasterlearn.io.remote import apply_cloud_defaults, gdal_path, is_remote
from rasterlearn.io.vrt import VrtBand, VrtSource, dst_rect, vrt_xml

__all__ = ["StacStack", "asset_names", "resolve_source", "stac_scenes", "stac_stack"]

log = logging.getLogger(__name__)

_RESAMPLING = ("nearest", "bilinear", "cubic", "average", "mode")
_KEEP: dict[str, MemoryFile] = {}  # in-memory VRTs stay alive for the process


@dataclass(frozen=True)
class StacStack:
    """A virtual band stack built from a STAC item.

    ``path`` opens with :func:`rasterlearn.io.raster.open_raster` like any raster; ``bands`` names each
    band ``ASSET`` (one-band assets) or ``ASSET:N``.
    """

    path: str
    item_id: str
    item: str
    assets: tuple[str, ...]
    hrefs: dict[str, str] = field(default_factory=dict)
    bands: tuple[str, ...] = ()
    resampled: tuple[str, ...] = ()

    def provenance(self) -> dict[str, Any]:
        """What an output records about its STAC source."""
        return {
            "stac_item": self.item,
            "stac_item_id": self.item_id,
            "stac_assets": list(self.assets),
            "stac_hrefs": dict(self.hrefs),
            "stac_resampled": list(self.resampled),
        }


def _read_item(item: str | Path) -> Any:
    import pystac

    s = str(item)
    if not is_remote(s) and not Path(s).exists():
        raise InputNotFoundError(f"STAC item not found: {s}. Give the path or URL of an item JSON file.")
    try:
        obj = pystac.read_file(s)
    except Exception as exc:  # pystac raises JSON, HTTP and schema errors of many kinds
        raise InputError(f"Cannot read {s} as a STAC item: {exc}. Is it a STAC Item JSON file?") from exc
    if not isinstance(obj, pystac.Item):
        raise InputError(
            f"{s} is a STAC {type(obj).__name__}, not an Item: give one item's JSON (one scene)."
        )
    return obj


def _open_asset(name: str, href: str, item: str) -> rasterio.DatasetReader:
    try:
        return rasterio.open(gdal_path(href))
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(
            f"Asset {name!r} of STAC item {item} cannot be opened ({href}): {exc}. Check that the href "
            f"is reachable from this machine."
        ) from exc


def stac_stack(
    item: str | Path,
    assets: Sequence[str],
    *,
    resampling: str = "bilinear",
    dest: str | Path | None = None,
) -> StacStack:
    """Stack ``assets`` of the STAC ``item`` as bands of one VRT on one grid (see the module docs).

    Raises:
        InputError: an asset name the item does not have (the message lists the raster assets), assets
            in different CRSs, or an asset that does not open.
    """
    if resampling not in _RESAMPLING:
        raise InputError(f"Unknown resampling {resampling!r}: use one of {', '.join(_RESAMPLING)}")
    if not assets:
        raise InputError("No STAC assets chosen: name them, e.g. --assets B04,B03,B02")
    it = _read_item(item)
    _check_assets(it, item, assets)
    if any(is_remote(it.assets[a].get_absolute_href() or "") for a in assets):
        apply_cloud_defaults()
    hrefs = {a: str(it.assets[a].get_absolute_href()) for a in assets}
    infos = [_asset_info(a, hrefs[a], str(item)) for a in assets]
    grid = _StackGrid.of(infos, item)
    grid.log(it.id, infos, resampling)
    names, bands = _vrt_bands(infos, hrefs, grid)
    meta = {"stac_item_id": it.id, "stac_assets": ",".join(assets), "stac_resampling": resampling}
    xml = vrt_xml(
        grid.width,
        grid.height,
        infos[0]["crs"].to_wkt(),
        Affine(grid.res, 0, grid.left, 0, -grid.res, grid.top),
        bands,
        metadata=meta,
        resampling=resampling,
    )
    return StacStack(
        path=_vrt_path(xml, it.id, dest),
        item_id=it.id,
        item=str(item),
        assets=tuple(assets),
        hrefs=hrefs,
        bands=tuple(names),
        resampled=grid.resampled,
    )


def _check_assets(it: Any, item: str | Path, assets: Sequence[str]) -> None:
    """Raise :class:`InputError` for chosen assets the item does not have, listing its raster assets."""
    missing = [a for a in assets if a not in it.assets]
    if missing:
        rasters = [
            k
            for k, a in it.assets.items()
            if ("data" in (a.roles or []) or any(t in (a.media_type or "") for t in ("tiff", "jp2")))
            and not {"thumbnail", "overview"} & set(a.roles or [])
        ]
        raise InputError(
            f"STAC item {item} has no asset {', '.join(map(repr, missing))}; its raster assets are: "
            f"{', '.join(rasters) or 'none'}. Choose with --assets NAME,NAME,..."
        )


def _asset_info(name: str, href: str, item: str) -> dict[str, Any]:
    """What the VRT needs of one asset: CRS, transform, bounds, shape, bands, data types, nodata, blocks."""
    with _open_asset(name, href, item) as ds:
        return {
            "name": name,
            "crs": ds.crs,
            "transform": ds.transform,
            "bounds": ds.bounds,
            "shape": (ds.height, ds.width),
            "count": ds.count,
            "dtypes": ds.dtypes,
            "nodata": ds.nodatavals,
            "blocks": ds.block_shapes[0],
        }


@dataclass(frozen=True)
class _StackGrid:
    """The stack's grid: the first asset's footprint at the finest resolution of the chosen assets, the
    common data type, and the assets resampled onto it."""

    res: float
    left: float
    top: float
    width: int
    height: int
    dtype: str
    resampled: tuple[str, ...]

    @classmethod
    def of(cls, infos: list[dict[str, Any]], item: str | Path) -> _StackGrid:
        """Raises :class:`InputError` for assets in different CRSs."""
        first = infos[0]
        other = [i for i in infos if i["crs"] != first["crs"]]
        if other:
            raise InputError(
                f"STAC item {item}: asset {other[0]['name']!r} is in {other[0]['crs']}, asset "
                f"{first['name']!r} in {first['crs']}; stack assets of one CRS (a reprojected stack would "
                f"resample every band twice)"
            )
        res = min(min(abs(i["transform"].a), abs(i["transform"].e)) for i in infos)
        left, bottom, right, top = first["bounds"]
        width, height = round((right - left) / res), round((top - bottom) / res)
        dtype = np.result_type(*[d for i in infos for d in i["dtypes"]]).name
        resampled = tuple(i["name"] for i in infos if abs(abs(i["transform"].a) - res) > 1e-9 * res)
        return cls(res, left, top, width, height, dtype, resampled)

    def log(self, item_id: str, infos: list[dict[str, Any]], resampling: str) -> None:
        """Log the resampled assets and a change of data type."""
        if self.resampled:
            log.info(
                "STAC item %s: asset(s) %s resampled (%s) onto the %g-unit grid of the finest chosen asset",
                item_id,
                ", ".join(self.resampled),
                resampling,
                self.res,
            )
        if any(d != self.dtype for i in infos for d in i["dtypes"]):
            log.info(
                "STAC item %s: assets of different data types stacked as %s (values unchanged)",
                item_id,
                self.dtype,
            )


def _vrt_bands(
    infos: list[dict[str, Any]], hrefs: dict[str, str], grid: _StackGrid
) -> tuple[list[str], list[VrtBand]]:
    """Every band of every asset, in order, placed on the grid: their names and VRT bands."""
    names: list[str] = []
    bands: list[VrtBand] = []
    for info in infos:
        dst = dst_rect(info["bounds"], grid.left, grid.top, grid.res)
        for b in range(1, info["count"] + 1):
            name = info["name"] if info["count"] == 1 else f"{info['name']}:{b}"
            names.append(name)
            nodata = info["nodata"][b - 1]
            src = VrtSource(
                hrefs[info["name"]], b, info["shape"], info["dtypes"][b - 1], info["blocks"], dst, nodata
            )
            bands.append(VrtBand(grid.dtype, [src], description=name, nodata=nodata))
    return names, bands


def _vrt_path(xml: str, item_id: str, dest: str | Path | None) -> str:
    """Write the VRT to ``dest``, else keep it in GDAL's in-memory file system; its path."""
    if dest is not None:
        atomic_write_text(dest, xml)
        return str(dest)
    # named by its content: the same item and assets give the same path, so a resumed job recognises it
    name = f"{item_id}-{hashlib.sha256(xml.encode()).hexdigest()[:12]}.vrt"
    known = [m for m in _KEEP.values() if m.name.endswith("/" + name)]
    if known:
        return known[0].name
    mem = MemoryFile(xml.encode(), filename=name)
    _KEEP[mem.name] = mem
    return mem.name


def stac_scenes(
    items: Sequence[str | Path],
    assets: Sequence[str],
    dest_dir: str | Path,
    *,
    resampling: str = "bilinear",
) -> list[StacStack]:
    """One stack per STAC item, each written as ``DEST_DIR/<item id>.vrt`` (files every worker can open).

    Raises:
        InputError: two items with one id (their stacks would share a file name), or what
            :func:`stac_stack` raises for an item.
    """
    stacks: list[StacStack] = []
    seen: dict[str, str] = {}
    Path(dest_dir).mkdir(parents=True, exist_ok=True)
    for item in items:
        it = _read_item(item)
        if it.id in seen:
            raise InputError(
                f"STAC items {seen[it.id]} and {item} have the same id {it.id!r}; map them into separate "
                f"--out-dir folders"
            )
        seen[it.id] = str(item)
        stacks.append(stac_stack(item, assets, resampling=resampling, dest=Path(dest_dir) / f"{it.id}.vrt"))
    return stacks


def asset_names(assets: str | None) -> list[str]:
    """A comma list of asset names (``B04,B03,B02``) as a list."""
    return [a.strip() for a in (assets or "").split(",") if a.strip()]


def resolve_source(
    raster: str | Path | None, stac: str | None, assets: str | None, dest_dir: Path | None = None
) -> tuple[str, dict[str, Any]]:
    """The raster a stage reads, given as a path, URL or /vsi path (``raster``) or as a STAC item's assets
    (``stac``, ``assets``), and what its output records about it (:meth:`StacStack.provenance`; empty for a
    plain raster).

    A STAC item's stack is held in memory, or written as ``DEST_DIR/<item id>.vrt`` when ``dest_dir`` is
    given (for dask workers, which cannot see this process's memory).

    Raises:
        ConfigError: neither or both of ``raster`` and ``stac``, or ``assets`` without ``stac``.
    """
    if stac is None:
        if assets:
            raise ConfigError("--assets needs --stac ITEM.json (the STAC item whose assets to stack)")
        if raster is None:
            raise ConfigError("Give a RASTER to read (a file, URL or /vsi... path) or --stac ITEM.json")
        return str(raster), {}
    if raster is not None:
        raise ConfigError(f"Give either RASTER ({raster}) or --stac {stac}, not both")
    names = asset_names(assets)
    st = stac_stack(stac, names) if dest_dir is None else stac_scenes([stac], names, dest_dir)[0]
    return st.path, st.provenance()
