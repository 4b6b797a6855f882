"""What users open: streamed COGs, polygon layers (polygonize, border merging, writing,
streamed writing), mosaics through the COG helpers, QGIS styles, quicklooks. Writers create
files under a temporary name and rename them (``geoseg._files``). May import geometry,
scene (class tables) and store; never torch.
"""
