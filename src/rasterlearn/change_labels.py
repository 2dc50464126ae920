"""From→to change labels from two label layers (one per date).

:func:`transition_labels` overlays the label polygons of date A and date B and writes one polygon layer whose
``transition`` attribute names what each piece became (``forest→bare``; unchanged pieces are ``no change``,
or dropped with ``keep_unchanged=False``) and whose ``changed`` attribute is 1 or 0. Chips cut from it train
a transition model (``--attribute transition``) or a binary change model (``--attribute changed``) with the
ordinary ``chips --image A --image B`` workflow. Only ground both layers label is labelled: a piece that
one date leaves unlabelled is unknown, not "no change". Features with an empty label are skipped (counted).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd

from rasterlearn.errors import EmptyInputError, OutputError
from rasterlearn.io.paths import check_outputs
from rasterlearn.io.vector import read_vector, write_vector
from rasterlearn.labels import is_null_label

__all__ = ["TransitionResult", "transition_labels"]

log = logging.getLogger(__name__)

ARROW = "→"


@dataclass(frozen=True)
class TransitionResult:
    """The written layer and the area (CRS units²) of every transition."""

    path: Path
    areas: dict[str, float]
    features: int


def _labelled(gdf: gpd.GeoDataFrame, attribute: str, source: str) -> gpd.GeoDataFrame:
    null = gdf[attribute].map(is_null_label)
    if null.any():
        log.info("%s: %d feature(s) with an empty %r skipped", source, int(null.sum()), attribute)
    out = gdf.loc[~null, [attribute, "geometry"]].copy()
    out[attribute] = out[attribute].map(lambda v: str(v).strip())
    return out


def transition_labels(
    labels_a: str | Path,
    labels_b: str | Path,
    output: str | Path,
    *,
    attribute: str,
    attribute_b: str | None = None,
    layer_a: str | int | None = None,
    layer_b: str | int | None = None,
    keep_unchanged: bool = True,
    unchanged_name: str = "no change",
    min_area: float | None = None,
    overwrite: bool = False,
) -> TransitionResult:
    """Write the from→to transition polygons of two label layers (see the module docs).

    Args:
        labels_a, labels_b: label layers of the first and the second date (any CRS: B is reprojected to A's).
        attribute: the class attribute of A (and of B unless ``attribute_b`` names B's).
        keep_unchanged: keep pieces whose class did not change, as ``unchanged_name`` (``changed`` = 0).
        min_area: pieces this small (CRS units²) are slivers of misaligned boundaries and dropped (logged);
            default: a millionth of the labelled area of A.

    Raises:
        EmptyInputError: the layers share no labelled ground.
    """
    out = Path(output)
    check_outputs([labels_a, labels_b], [out])
    if out.exists() and not overwrite:
        raise OutputError(f"{out} exists; pass --overwrite or choose another name")
    attr_b = attribute_b or attribute
    a = _labelled(read_vector(labels_a, layer=layer_a, attribute=attribute), attribute, str(labels_a))
    b = read_vector(labels_b, layer=layer_b, attribute=attr_b, crs=a.crs)
    b = _labelled(b, attr_b, str(labels_b))
    a = a.rename(columns={attribute: "_from"})
    b = b.rename(columns={attr_b: "_to"})
    pieces = gpd.overlay(a, b, how="intersection", keep_geom_type=True)
    # boundaries the two dates drew (or reprojection moved) slightly apart leave slivers: not transitions
    tol = 1e-6 * float(a.geometry.area.sum()) if min_area is None else min_area
    sliver = pieces.geometry.is_empty | (pieces.geometry.area <= tol)
    if sliver.any():
        log.info(
            "%d sliver piece(s) under %.3g units² (boundaries not quite aligned) dropped",
            int(sliver.sum()),
            tol,
        )
    pieces = pieces[~sliver]
    if pieces.empty:
        raise EmptyInputError(
            f"{labels_a} and {labels_b} share no labelled ground: transitions need polygons of both dates "
            f"over the same place (check that both cover the area, and their CRSs)"
        )
    changed = pieces["_from"] != pieces["_to"]
    pieces["transition"] = [
        f"{f}{ARROW}{t}" if c else unchanged_name
        for f, t, c in zip(pieces["_from"], pieces["_to"], changed, strict=True)
    ]
    pieces["changed"] = changed.astype("int32")
    if not keep_unchanged:
        pieces = pieces[changed]
    result = pieces.rename(columns={"_from": "class_from", "_to": "class_to"})[
        ["transition", "changed", "class_from", "class_to", "geometry"]
    ]
    result = result.dissolve(by=["transition", "changed", "class_from", "class_to"], as_index=False)
    result = result.explode(index_parts=False).reset_index(drop=True)
    areas: dict[str, Any] = result.assign(_a=result.geometry.area).groupby("transition")["_a"].sum().to_dict()
    write_vector(result, out)
    log.info(
        "Transitions written to %s: %s",
        out,
        ", ".join(f"{k} {v:,.0f}" for k, v in sorted(areas.items())),
    )
    return TransitionResult(out, {k: float(v) for k, v in areas.items()}, len(result))
