"""Exploration in notebooks: ``import geoseg.jupyter`` registers the ``.geoseg`` accessor on
xarray objects (lazy prediction, plots, folium maps, vectors). May import every library layer.
"""

from geoseg.jupyter import accessor as _accessor  # noqa: F401  (registers the accessor)
