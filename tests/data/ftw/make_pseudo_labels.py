"""Regenerate ``austria_pseudo_labels.tif``: GENERATED 3-class labels (0 background, 1 field
interior, 2 field boundary) for the FTW Sentinel-2 sample of ../shared/data/ftw, used only by
the smoke profile of pipelines/ftw-fields.yaml to run the training machinery on CPU. They are
NOT ground truth: vegetated parcels are guessed from the June NDVI (> 0.55, opened), each
connected parcel's outer pixel ring is its boundary.

    .venv/bin/python tests/data/ftw/make_pseudo_labels.py
"""

from pathlib import Path

import numpy as np
import rasterio
from scipy import ndimage

HERE = Path(__file__).parent
SOURCE = HERE.parents[3] / "shared" / "data" / "ftw" / "inference-img.tif"

with rasterio.open(SOURCE) as ds:
    red, nir = ds.read(1).astype(np.float32), ds.read(4).astype(np.float32)
    profile = ds.profile
ndvi = (nir - red) / np.maximum(nir + red, 1)
veg = ndimage.binary_opening(ndvi > 0.55, iterations=2)
parcels, _ = ndimage.label(veg)
# a pixel is interior when its 4 neighbours belong to the same parcel (else: boundary)
pad = np.pad(parcels, 1)
same = [pad[1:-1, 1:-1] == pad[1 + dr : pad.shape[0] - 1 + dr, 1 + dc : pad.shape[1] - 1 + dc]
        for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1))]
labels = np.zeros(parcels.shape, np.uint8)
labels[parcels > 0] = 2
labels[(parcels > 0) & np.logical_and.reduce(same)] = 1
profile.update(count=1, dtype="uint8", nodata=None, compress="deflate", tiled=False)
with rasterio.open(HERE / "austria_pseudo_labels.tif", "w", **profile) as out:
    out.write(labels, 1)
    out.update_tags(NOTE="GENERATED pseudo-labels from NDVI for smoke tests; not ground truth")
print(np.bincount(labels.ravel()))
