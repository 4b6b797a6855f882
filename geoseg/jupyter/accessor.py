"""The ``.geoseg`` xarray accessor: lazy prediction, quicklooks, maps and vectors in Jupyter."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from geoseg.bundle.card import ModelCard
from geoseg.config import NODATA
from geoseg.errors import InputError
from geoseg.geometry.window import PixelWindow
from geoseg.scene.arrays import ArrayScene
from geoseg.scene.classes import ClassInfo


def _classes_of(arr: xr.DataArray) -> list[ClassInfo]:
    ids = arr.attrs.get("class_ids")
    if ids is None:
        raise InputError("not a geoseg prediction (no class_ids attribute); use .geoseg.predict()")
    return [ClassInfo(id=i, name=n, color=c) for i, n, c in
            zip(ids, arr.attrs["class_names"], arr.attrs["class_colors"], strict=True)]  # fmt: skip


def predict_arrays(arrays: Mapping[str, xr.DataArray], model: str | Path, *, tile: int | None,
                   overlap: int | None, chunk: int, batch: int | None, probabilities: bool,
                   device: str) -> xr.DataArray | xr.Dataset:  # fmt: skip
    """Lazy prediction of modality arrays with a bundle (see ``DataArray.geoseg.predict``)."""
    from geoseg.bundle.bundle import load_bundle
    from geoseg.inference.engine import Engine
    from geoseg.inference.lazy import lazy_prediction
    from geoseg.runtime import default_batch

    bundle = load_bundle(model, device)
    card = bundle.card
    scene = _array_scene(card, arrays)
    tile = tile or card.tile_size
    overlap = overlap if overlap is not None else card.default_overlap(tile)
    classes, probs = lazy_prediction(scene, Engine(bundle, device), tile=tile, overlap=overlap,
                                     chunk=chunk, batch=batch or default_batch(device),
                                     probabilities=probabilities)  # fmt: skip
    ref = next(iter(arrays.values()))
    coords = {"y": ref["y"], "x": ref["x"]}
    attrs = {"class_ids": [c.id for c in card.classes],
             "class_names": [c.name for c in card.classes],
             "class_colors": [c.color for c in card.classes],
             "model": str(model), "architecture": card.architecture}  # fmt: skip
    out = xr.DataArray(classes, dims=("y", "x"), coords=coords, name="classes", attrs=attrs)
    out = out.rio.write_crs(scene.grid.crs).rio.write_nodata(NODATA)
    out = out.rio.write_transform(scene.grid.transform)
    if not probabilities:
        return out
    p = xr.DataArray(probs, dims=("class", "y", "x"),
                     coords={"class": [c.name for c in card.classes], **coords},
                     name="probabilities", attrs={"scale": "p = value / 254"})  # fmt: skip
    p = p.rio.write_crs(scene.grid.crs).rio.write_nodata(NODATA)
    return xr.Dataset({"classes": out, "probabilities": p}, attrs=attrs)


def _array_scene(card: ModelCard, arrays: Mapping[str, xr.DataArray]) -> ArrayScene:
    """The arrays as a scene in the card's modality order, checked against the card."""
    missing = [m for m in card.raster_modalities if m not in arrays]
    if missing:
        raise InputError(f"the model needs modalities {missing}; pass them as arrays")
    scene = ArrayScene({m: arrays[m] for m in card.raster_modalities})
    for name, n in scene.band_counts.items():
        if n != len(card.modalities[name].bands):
            raise InputError(f"{name!r} has {n} band(s) but the model expects "
                             f"{len(card.modalities[name].bands)}; select bands with .isel(band=...)")
    # spectral indices the model was trained with, computed window by window
    return scene.with_indices(card.derived, card.source_roles())


@xr.register_dataarray_accessor("geoseg")
class GeosegAccessor:
    """geoseg on a DataArray: an image (band, y, x) or a prediction (y, x)."""

    def __init__(self, obj: xr.DataArray):
        self._obj = obj

    def predict(self, model: str | Path, *, modalities: Mapping[str, xr.DataArray] | None = None,
                tile: int | None = None, overlap: int | None = None, chunk: int = 1024,
                batch: int | None = None, probabilities: bool = False,
                device: str = "cpu") -> xr.DataArray | xr.Dataset:  # fmt: skip
        """Lazy class ids (dask) with this array's coordinates and CRS; compute a viewport
        with ``.sel(...)`` / ``.isel(...)`` and only the chunks it needs are predicted.

        This array is the bundle's reference modality (``image``); other modalities go in
        ``modalities`` (on the same grid, e.g. via ``.rio.reproject_match(image)``).
        """
        from geoseg.bundle.folder import read_card

        ref = read_card(model).reference
        arrays = {ref: self._obj, **(modalities or {})}
        return predict_arrays(arrays, model, tile=tile, overlap=overlap, chunk=chunk,
                              batch=batch, probabilities=probabilities, device=device)  # fmt: skip

    def plot(self, ax: Any = None, max_side: int = 1000) -> Any:
        """Quicklook of a prediction with class colours and a legend."""
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch

        classes = _classes_of(self._obj)
        f = max(1, int(np.ceil(max(self._obj.shape) / max_side)))
        data = np.asarray(self._obj[::f, ::f].values)
        lut = np.zeros((256, 4))
        for c in classes:
            lut[c.id] = (*(v / 255 for v in c.rgb), 1.0)
        if ax is None:
            _, ax = plt.subplots(figsize=(7, 7))
        x, y = self._obj["x"].values[::f], self._obj["y"].values[::f]
        ax.imshow(lut[data], extent=(x[0], x[-1], y[-1], y[0]), interpolation="nearest")
        present = set(np.unique(data).tolist())
        ax.legend(handles=[Patch(facecolor=c.color, label=c.name) for c in classes
                           if c.id in present], loc="upper left", bbox_to_anchor=(1.01, 1),
                  frameon=False)  # fmt: skip
        ax.set_title(self._obj.attrs.get("architecture", "prediction"))
        return ax

    def to_vectors(self, min_area: float = 0.0, simplify: float = 0.0, chunk: int = 2048):
        """Polygons of a prediction (computes it) as a GeoDataFrame with class names and areas."""
        from geoseg.geometry.grid import GridBox
        from geoseg.outputs.vectors import polygonize

        arr = self._obj
        grid = GridBox(arr.sizes["y"], arr.sizes["x"], arr.rio.transform(), arr.rio.crs)
        data = arr.data

        def read(window: PixelWindow) -> np.ndarray:
            return np.asarray(data[window.slices])

        return polygonize(read, grid, _classes_of(arr), chunk=chunk, nodata=NODATA,
                          min_area=min_area, simplify=simplify)  # fmt: skip

    def explore(self, image: xr.DataArray | None = None, opacity: float = 0.6,
                max_side: int = 1024) -> Any:  # fmt: skip
        """Interactive folium map: the prediction (and optionally the RGB image) overlaid."""
        try:
            import folium
        except ImportError as exc:
            raise ImportError("explore() needs folium: pip install 'geoseg[notebooks]'") from exc
        from rasterio.warp import transform_bounds

        pred = self._obj
        classes = _classes_of(pred)
        lut = np.zeros((256, 4), np.uint8)
        for c in classes:
            lut[c.id] = (*c.rgb, 255)
        merc = _to_web_mercator(pred, max_side, resampling="nearest")
        rgba = lut[np.asarray(merc.values).astype(np.uint8)]
        b = transform_bounds(merc.rio.crs, "EPSG:4326", *merc.rio.bounds())
        m = folium.Map(location=[(b[1] + b[3]) / 2, (b[0] + b[2]) / 2], tiles=None)
        if image is not None:
            folium.raster_layers.ImageOverlay(_display_rgba(image, max_side),
                                              [[b[1], b[0]], [b[3], b[2]]],
                                              name="image").add_to(m)  # fmt: skip
        folium.raster_layers.ImageOverlay(rgba, [[b[1], b[0]], [b[3], b[2]]], opacity=opacity,
                                          name="prediction").add_to(m)  # fmt: skip
        folium.LayerControl().add_to(m)
        m.fit_bounds([[b[1], b[0]], [b[3], b[2]]])
        return m


def _display_rgba(image: xr.DataArray, max_side: int) -> np.ndarray:
    """RGBA floats in 0..1 of an image's first three bands (one band: grey), stretched
    2–98 %, nodata transparent, in Web Mercator."""
    img = image if "band" in image.dims else image.expand_dims(band=[1])
    img = img.isel(band=slice(0, 3)).astype(np.float64)
    nodata = image.rio.nodata
    if nodata is not None and not np.isnan(nodata):
        img = img.where(img != nodata)
    img = img.rio.write_nodata(np.nan)
    arr = np.moveaxis(np.asarray(_to_web_mercator(img, max_side, "bilinear").values), 0, -1)
    if arr.shape[-1] < 3:
        arr = np.repeat(arr[..., :1], 3, axis=-1)
    valid = np.isfinite(arr).all(axis=-1)
    lo, hi = np.nanpercentile(arr[valid], [2, 98]) if valid.any() else (0.0, 1.0)
    rgb = np.clip((np.nan_to_num(arr) - lo) / max(hi - lo, 1e-9), 0, 1)
    return np.dstack([rgb, valid.astype(np.float64)])


def _to_web_mercator(arr: xr.DataArray, max_side: int, resampling: str) -> xr.DataArray:
    from rasterio.enums import Resampling

    f = max(1, int(np.ceil(max(arr.sizes["y"], arr.sizes["x"]) / max_side)))
    small = arr.isel(y=slice(None, None, f), x=slice(None, None, f)).compute()
    small = small.rio.write_transform(arr.rio.transform() * arr.rio.transform().scale(f, f))
    return small.rio.reproject("EPSG:3857", resampling=Resampling[resampling])


@xr.register_dataset_accessor("geoseg")
class GeosegDatasetAccessor:
    """geoseg on a Dataset whose variables are modalities named as in the bundle.

    Single-band modalities should be 2-D (y, x) variables: a Dataset aligns all variables on a
    shared ``band`` coordinate, which would pad them with NaN bands.
    """

    def __init__(self, obj: xr.Dataset):
        self._obj = obj

    def predict(self, model: str | Path, **kwargs: Any) -> xr.DataArray | xr.Dataset:
        """Like ``DataArray.geoseg.predict`` with every modality taken from this Dataset."""
        arrays = {name: self._obj[name] for name in self._obj.data_vars}
        opts = {"tile": None, "overlap": None, "chunk": 1024, "batch": None, "probabilities": False,
                "device": "cpu"} | kwargs  # fmt: skip
        return predict_arrays(arrays, model, **opts)
