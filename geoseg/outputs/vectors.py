"""Class raster -> polygon layers: the public names of the vector modules, in one place.

The work is split along its seams: :mod:`geoseg.outputs.polygonize` (raster chunks ->
polygons, in memory), :mod:`geoseg.outputs.merge` (polygons cut by chunk lines, re-joined),
:mod:`geoseg.outputs.write` (layers to GeoPackage/Shapefile/GeoParquet/FlatGeobuf) and
:mod:`geoseg.outputs.stream` (``polygonize_to_file``: whole scenes in bounded memory); ground
areas live in :mod:`geoseg.geometry.area`.
"""

from __future__ import annotations

from geoseg.geometry.area import ground_area
from geoseg.outputs.polygonize import polygonize
from geoseg.outputs.stream import polygonize_to_file
from geoseg.outputs.write import FORMATS, write_vectors

__all__ = ["FORMATS", "ground_area", "polygonize", "polygonize_to_file", "write_vectors"]
