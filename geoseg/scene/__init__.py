"""A scene as pixels: :class:`Scene` (lazy, aligned modalities read window by window), scenes
backed by in-memory or dask arrays, band statistics, class tables and label sources (rasters
and vectors burnt onto the scene grid). May import geometry and the foundation; never torch.
"""
