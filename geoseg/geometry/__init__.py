"""Where pixels are on the ground: :class:`GridBox` (a raster's shape, transform and CRS as one
value), :class:`PixelWindow` (the one frozen pixel-window type every window travels as) and
ground areas. Imports only geoseg's foundation (errors) and rasterio/affine/pyproj: never
torch, xarray or dask.
"""
