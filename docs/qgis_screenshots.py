"""Render the docs/qgis.md screenshots headless from real plugin runs on ../shared/data.

Run with QGIS' Python (not the venv), from the repository root:

    QT_QPA_PLATFORM=offscreen RASTERLEARN_EXECUTABLE=$PWD/.venv/bin/rasterlearn \\
        /usr/bin/python3 docs/qgis_screenshots.py ../shared/data /tmp/rl-shots docs/images

It runs the plugin's algorithms through processing.run (cluster and PCA of NAIP 2019, vectorize of the
cluster map, similarity of the Sentinel-2 subset to its reference points), loads the outputs as QGIS loads
them (with their stored styles) and renders each with QgsMapRendererParallelJob to a small PNG.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import (
    QgsApplication,
    QgsMapRendererParallelJob,
    QgsMapSettings,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor, QImage

app = QgsApplication([], False)
app.initQgis()
sys.path[:0] = ["/usr/share/qgis/python/plugins", str(Path(__file__).resolve().parents[1] / "qgis_plugin")]
import processing  # noqa: E402
from processing.core.Processing import Processing  # noqa: E402

Processing.initialize()
from rasterlearn_qgis.provider import RasterlearnProvider  # noqa: E402

provider = RasterlearnProvider()  # keep a reference: the registry does not own Python providers
QgsApplication.processingRegistry().addProvider(provider)


def render(layers: list, path: Path, width: int = 320) -> None:
    settings = QgsMapSettings()
    settings.setLayers(layers)  # first = on top
    extent = layers[-1].extent()
    settings.setDestinationCrs(layers[-1].crs())
    height = round(width * extent.height() / extent.width())
    settings.setOutputSize(QSize(width, height))
    settings.setExtent(extent)
    settings.setBackgroundColor(QColor("white"))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage().convertToFormat(QImage.Format.Format_Indexed8)  # 8-bit palette: small files
    image.save(str(path), "PNG")
    print("wrote", path, path.stat().st_size, "bytes")


def main() -> None:
    data, work, images = (Path(a) for a in sys.argv[1:4])
    work.mkdir(parents=True, exist_ok=True)
    images.mkdir(parents=True, exist_ok=True)
    naip = data / "naip_nd" / "naip_2019_rgbn.tif"
    s2 = data / "cameroon_s2" / "s2_11band.tif"
    cl, pca, poly, sim = (
        str(work / n) for n in ("naip_clusters.tif", "naip_pca.tif", "naip_clusters.gpkg", "s2_sim.tif")
    )
    processing.run("rasterlearn:cluster", {"INPUT": str(naip), "CLUSTERS": 6, "OUTPUT": cl})
    processing.run("rasterlearn:reduce", {"INPUT": str(naip), "COMPONENTS": 3, "OUTPUT": pca})
    processing.run("rasterlearn:vectorize", {"INPUT": cl, "MIN_AREA": 2500, "OUTPUT": poly})
    refs = data / "cameroon_s2" / "reference_points.shp"
    processing.run(
        "rasterlearn:similarity",
        {"INPUT": str(s2), "REFERENCES": str(refs), "STANDARDIZE": True, "OUTPUT": sim},
    )
    naip_layer = QgsRasterLayer(str(naip), "naip")
    naip_layer.renderer().setRedBand(1)  # bands are R, G, B, NIR
    render([QgsRasterLayer(cl, "clusters")], images / "qgis_cluster.png")
    render([QgsRasterLayer(pca, "pca")], images / "qgis_pca.png")
    render([QgsVectorLayer(poly, "polygons", "ogr"), naip_layer], images / "qgis_polygons.png")
    render(
        [QgsVectorLayer(str(refs), "refs", "ogr"), QgsRasterLayer(sim, "similarity")],
        images / "qgis_similarity.png",
    )


main()
app.exitQgis()
