"""The synthetic demo scene: a deterministic, procedurally generated multispectral scene with labels.

``rasterlearn demo`` needs data that exists on every machine without a download and without committed data
files. :func:`make_synthetic_scene` writes one: a multi-band reflectance image in a real projected CRS with
water (a meandering river and a lake), forest (textured crowns, deciduous/conifer mixture), agricultural
fields (rectangular parcels with per-field crop spectra and tramline texture), a road network (curved main
roads and straight farm roads along parcel edges) and buildings (rotated rectangles beside the roads,
clustered in a village), with a nodata corner like the rotated edge of a satellite scene.

Everything derives from ``seed``: the same seed gives byte-identical arrays, the geometry does not depend on
the band count or the data type, and no pixel loop runs in Python (numpy/scipy only; about a second for the
default 768 x 768 scene). Each component draws from its own random stream, so e.g. switching the nodata
corner off leaves the rest of the scene unchanged.

Outputs are named *synthetic* everywhere (file names, layer names, raster tags) so that nobody mistakes them
for real imagery. The label polygons are polygonized from the object raster, so rasterizing them back onto
the grid (pixel centres) reproduces the label raster exactly.

The pure kernel is :func:`make_synthetic_array` (arrays + grid, no I/O); :func:`synthetic_polygons` and
:func:`synthetic_reference_points` turn its result into vector layers; :func:`make_synthetic_scene` writes
the files.
"""

from rasterlearn.synthetic.components import _buildings as _buildings
from rasterlearn.synthetic.components import _corner as _corner
from rasterlearn.synthetic.components import _fields as _fields
from rasterlearn.synthetic.components import _forest as _forest
from rasterlearn.synthetic.components import _noise as _noise

# names rasterlearn.synthetic_change builds on (``from rasterlearn import synthetic as syn``)
from rasterlearn.synthetic.components import _Objects as _Objects
from rasterlearn.synthetic.components import _roads as _roads
from rasterlearn.synthetic.components import _water as _water
from rasterlearn.synthetic.files import make_synthetic_scene, synthetic_polygons, synthetic_reference_points
from rasterlearn.synthetic.scene import _check_crs as _check_crs
from rasterlearn.synthetic.scene import _grid_origin as _grid_origin
from rasterlearn.synthetic.scene import _render as _render
from rasterlearn.synthetic.scene import _size as _size
from rasterlearn.synthetic.scene import make_synthetic_array
from rasterlearn.synthetic.spec import _MIN_SIZE as _MIN_SIZE
from rasterlearn.synthetic.spec import (
    BAND_ORDER,
    SYNTHETIC_CLASSES,
    SYNTHETIC_VERSION,
    WAVELENGTHS_NM,
    SyntheticArrays,
    SyntheticScene,
    synthetic_band_names,
    synthetic_schema,
)
from rasterlearn.synthetic.spec import BUILDING as BUILDING
from rasterlearn.synthetic.spec import FIELD as FIELD
from rasterlearn.synthetic.spec import FOREST as FOREST
from rasterlearn.synthetic.spec import IGNORE as IGNORE
from rasterlearn.synthetic.spec import ROAD as ROAD
from rasterlearn.synthetic.spec import WATER as WATER
from rasterlearn.synthetic.spec import SyntheticDtype as SyntheticDtype
from rasterlearn.synthetic.spec import _rng as _rng

__all__ = [
    "BAND_ORDER",
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_VERSION",
    "WAVELENGTHS_NM",
    "SyntheticArrays",
    "SyntheticScene",
    "make_synthetic_array",
    "make_synthetic_scene",
    "synthetic_band_names",
    "synthetic_polygons",
    "synthetic_reference_points",
    "synthetic_schema",
]
