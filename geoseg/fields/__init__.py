"""Agricultural fields: per-field statistics (class fractions, index statistics, areas) and
field delineation (FTW's interior / boundary / background scheme -> one polygon per field),
written as GeoParquet following fiboa and as GeoPackage. May import every layer up to
``training`` (scenes, indices, catalog band roles, the chunked polygonizer and its border
merger, COG and vector writers); the pipeline steps and the CLI build on it.
"""
