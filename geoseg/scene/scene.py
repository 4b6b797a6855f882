"""Scene: named modalities (image, height, dem...) aligned on the grid of a reference raster.

Nothing is loaded at open time. ``Scene.read`` returns one window of every modality, warped
on the fly onto the reference grid (GDAL WarpedVRT: only the window is resampled), and one
validity mask following GDAL's dataset-mask semantics.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import RasterioError, RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from geoseg._files import human_bytes
from geoseg.errors import GridError, InputError
from geoseg.geometry.grid import GridBox
from geoseg.geometry.window import PixelWindow
from geoseg.limits import limits, raise_hint, url_problem

if TYPE_CHECKING:
    from geoseg.scene.indices import IndexTransform

RESAMPLING = {"bilinear": Resampling.bilinear, "nearest": Resampling.nearest,
              "cubic": Resampling.cubic}  # fmt: skip
#: band roles resampled bilinearly when a modality has to be warped; others by nearest
CONTINUOUS_MODALITIES = {"image", "height", "dem", "dsm", "ndsm", "dtm"}


@dataclass(frozen=True)
class Modality:
    """One input raster of a scene, with the bands it contributes."""

    name: str
    path: str
    bands: tuple[int, ...]
    descriptions: tuple[str, ...]
    resampling: str
    aligned: bool
    grid: GridBox = field(repr=False)

    @property
    def count(self) -> int:
        return len(self.bands)


def gdal_detail(exc: BaseException, limit: int = 160) -> str:
    """GDAL's own reason for a failure: the innermost message of the error's causes (rasterio's
    outer "Read failed. See previous exception for details." says nothing)."""
    texts = []
    seen = 0
    while exc is not None and seen < 8:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if text:
            texts.append(text)
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    useful = [t for t in texts if "see previous exception" not in t.lower()] or texts or ["?"]
    text = useful[-1]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_failed(path: str, exc: BaseException, window: PixelWindow | None = None) -> InputError:
    """The one-line error of a raster whose pixels cannot be read (it opened: its header is
    intact), naming the file, the window and the fix; ``catalog validate``, predict, batch
    reports and training say it alike."""
    where = f" in window rows {window.r0}:{window.r1}, cols {window.c0}:{window.c1}" \
        if window is not None else ""  # fmt: skip
    return InputError(f"{path}: pixels cannot be read{where} (GDAL: {gdal_detail(exc)}); the "
                      "file is corrupt or truncated: re-download or replace it (`gdal_translate "
                      f"{path} check.tif` tells whether it reads)")


def _open_raster(path: str | Path):
    p = str(path)
    problem = url_problem(p)
    if problem:
        raise InputError(f"{p}: {problem}")
    if "://" not in p and not p.startswith("/vsi") and not Path(p).exists():
        raise InputError(f"{p}: file not found; check the path")
    try:
        ds = rasterio.open(p)
    except RasterioIOError as exc:
        raise InputError(f"{p}: not a readable raster ({exc}); give a GeoTIFF or GDAL raster") from None
    try:
        check_limits(p, ds)
    except InputError:
        ds.close()
        raise
    return ds


def check_limits(path: str, ds) -> None:
    """Refuse a raster beyond ``geoseg.limits``: too many pixels or bands, or far more pixels
    declared than its files hold (a decompression bomb or a damaged header), before anything
    is read or planned."""
    lim = limits()
    w, h, n = ds.width, ds.height, ds.count
    if w * h > lim.max_pixels:
        raise InputError(f"{path}: {w} x {h} pixels ({w * h / 1e9:.3g} gigapixels) is more than "
                         f"geoseg reads ({lim.max_pixels / 1e9:.3g} gigapixels): a damaged header"
                         ", or cut the raster into parts (gdal_translate -srcwin); "
                         f"{raise_hint('max_pixels', w * h)}")  # fmt: skip
    if n > lim.max_bands:
        raise InputError(f"{path}: {n} bands is more than geoseg reads ({lim.max_bands}): a "
                         "damaged header, or select bands first (gdal_translate -b); "
                         f"{raise_hint('max_bands', n)}")  # fmt: skip
    declared = w * h * sum(np.dtype(t).itemsize for t in ds.dtypes)
    if declared < lim.ratio_from_bytes or "://" in path or path.startswith("/vsi"):
        return
    size = 0
    for f in ds.files:
        with contextlib.suppress(OSError):
            size += os.path.getsize(f)
    if size and declared / size > lim.max_ratio:
        ratio = declared / size
        raise InputError(f"{path}: declares {human_bytes(declared)} of pixels in {human_bytes(size)}"
                         f" of file (1:{ratio:.0f}, more than 1:{lim.max_ratio:.0f}): a "
                         "decompression bomb or a damaged header; check it with gdalinfo, and "
                         f"if it is real (e.g. sparse) {raise_hint('max_ratio', math.ceil(ratio))}")


def resolve_bands(path: str, ds, spec: Sequence[int | str] | None) -> tuple[int, ...]:
    """1-based band indices from indices or band descriptions (case-insensitive)."""
    if spec is None or len(spec) == 0:
        return tuple(range(1, ds.count + 1))
    names = [(d or "").lower() for d in ds.descriptions]
    out = []
    for item in spec:
        if isinstance(item, str) and not item.strip().lstrip("-").isdigit():
            key = item.strip().lower()
            if key not in names:
                raise InputError(
                    f"{path}: no band described {item!r}; bands are "
                    f"{[d or f'#{i + 1}' for i, d in enumerate(ds.descriptions)]}"
                )
            out.append(names.index(key) + 1)
        else:
            idx = int(item)
            if not 1 <= idx <= ds.count:
                raise InputError(f"{path}: band {idx} does not exist (the file has {ds.count}); "
                                 f"use indices 1..{ds.count}")
            out.append(idx)
    return tuple(out)


def parse_band_spec(text: str | None) -> list[int | str] | None:
    """'1,2,3' or 'red,nir' -> list; None/'' -> all bands."""
    if not text:
        return None
    return [int(t) if t.strip().isdigit() else t.strip() for t in text.split(",") if t.strip()]


def check_reference(path: str, grid: GridBox) -> None:
    """Refuse a reference grid geoseg cannot map: no CRS, rotated or south-up transform."""
    if grid.crs is None:
        raise GridError(
            f"{path}: raster has no CRS; assign one (e.g. gdal_edit.py -a_srs EPSG:XXXX {path})"
        )
    _check_datum(path, grid)
    if not grid.is_rectilinear:
        raise GridError(
            f"{path}: rotated/sheared geotransform is not supported; make it north-up first "
            f"(gdalwarp {path} northup.tif)"
        )
    if grid.transform.e > 0:
        raise GridError(
            f"{path}: south-up geotransform (positive pixel height) is not supported; "
            f"make it north-up first (gdalwarp {path} northup.tif)"
        )


class Scene:
    """Modalities on one reference grid. Picklable: holds paths, never open handles."""

    def __init__(self, grid: GridBox, modalities: Mapping[str, Modality],
                 indices: IndexTransform | None = None):  # fmt: skip
        self.grid = grid
        self.modalities = dict(modalities)
        #: derived spectral-index modalities added to every read (geoseg.scene.indices)
        self.indices = indices

    def with_indices(self, derived: Mapping[str, Any], roles: Mapping[str, Sequence[str]]) -> Scene:
        """This scene with derived index modalities (``{name: IndexBands}``), computed window by
        window from the bands' ``roles`` (per modality, one role per band read)."""
        from geoseg.scene.indices import IndexTransform

        if not derived:
            return self
        return Scene(self.grid, self.modalities, IndexTransform.build(derived, roles))

    @classmethod
    def open(
        cls,
        sources: Mapping[str, str | Path],
        bands: Mapping[str, Sequence[int | str] | None] | None = None,
        resampling: Mapping[str, str] | None = None,
        reference: str | None = None,
    ) -> Scene:
        """Open modalities lazily and align them on the reference modality's grid.

        Args:
            sources: modality name -> raster path; the first (or ``reference``) sets the grid.
            bands: per modality, band indices (1-based) or descriptions; default all bands.
            resampling: per modality "bilinear"/"nearest"/"cubic" used when it is warped;
                default bilinear for image/elevation modalities, nearest otherwise.
        """
        if not sources:
            raise InputError("a scene needs at least one raster")
        bands = bands or {}
        resampling = resampling or {}
        ref_name = reference or next(iter(sources))
        if ref_name not in sources:
            raise InputError(f"reference modality {ref_name!r} not among {list(sources)}")
        order = [ref_name] + [n for n in sources if n != ref_name]
        mods: dict[str, Modality] = {}
        grid: GridBox | None = None
        for name in order:
            mods[name] = _open_modality(name, str(sources[name]), bands.get(name),
                                        resampling.get(name), grid)  # fmt: skip
            grid = grid or mods[name].grid
        assert grid is not None
        # keep the caller's order (the model card's modality order) for stacking
        return cls(grid, {n: mods[n] for n in sources})

    @property
    def reference(self) -> Modality:
        return next(m for m in self.modalities.values() if m.grid == self.grid and m.aligned)

    @property
    def band_counts(self) -> dict[str, int]:
        counts = {n: m.count for n, m in self.modalities.items()}
        return {**counts, **self.indices.band_counts} if self.indices is not None else counts

    def read(self, window: PixelWindow) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Read ``window`` of every modality as float32 (bands, h, w).

        Returns the arrays and a boolean validity mask (h, w): a pixel is invalid where the
        dataset mask of any modality says so (all bands nodata, alpha, mask band) or any of its
        selected bands is NaN. Zero is ordinary data unless a file declares it as nodata.
        """
        gdal_window = Window(window.c0, window.r0, window.width, window.height)
        arrays: dict[str, np.ndarray] = {}
        valid = np.ones(window.shape, dtype=bool)
        for name, mod in self.modalities.items():
            try:
                with ExitStack() as stack:
                    ds = stack.enter_context(rasterio.open(mod.path))
                    if not mod.aligned:
                        ds = stack.enter_context(self._warped(ds, mod))
                    data = ds.read(list(mod.bands), window=gdal_window, out_dtype="float32")
                    valid &= ds.dataset_mask(window=gdal_window) > 0
            except RasterioError as exc:  # opened fine, fails half way: truncated or corrupt
                raise read_failed(mod.path, exc, window) from None
            valid &= ~np.isnan(data).any(axis=0)
            arrays[name] = data
        if self.indices is not None:
            return self.indices.apply(arrays, valid)
        return arrays, valid

    def _warped(self, ds, mod: Modality) -> WarpedVRT:
        g = self.grid
        extra = {} if ds.nodata is not None or _has_mask(ds) else {"add_alpha": True}
        return WarpedVRT(
            ds, crs=g.crs, transform=g.transform, width=g.width, height=g.height,
            resampling=RESAMPLING[mod.resampling], **extra,
        )  # fmt: skip

    def read_valid(self, window: PixelWindow) -> np.ndarray:
        """Validity mask of a window (reads the data, since NaNs count as nodata)."""
        return self.read(window)[1]

    def describe(self) -> dict:
        """JSON-friendly summary (for reports and `geoseg info`)."""
        return {
            "grid": self.grid.to_dict(),
            "modalities": {
                n: {"path": m.path, "bands": list(m.bands), "descriptions": list(m.descriptions),
                    "aligned": m.aligned, "resampling": m.resampling}
                for n, m in self.modalities.items()
            },
        }  # fmt: skip

    def to_xarray(self, chunks: int = 1024) -> dict:
        """Lazy dask-backed DataArrays of every modality on the reference grid."""
        import rioxarray

        out = {}
        for name, mod in self.modalities.items():
            if mod.aligned:
                da = rioxarray.open_rasterio(mod.path, chunks={"band": -1, "x": chunks, "y": chunks},
                                             masked=False, lock=False)
            else:
                ds = rasterio.open(mod.path)
                da = rioxarray.open_rasterio(self._warped(ds, mod),
                                             chunks={"band": -1, "x": chunks, "y": chunks})
            out[name] = da.sel(band=list(mod.bands))
        return out


def _open_modality(name: str, source: str, bands: Sequence[int | str] | None,
                   resampling: str | None, grid: GridBox | None) -> Modality:  # fmt: skip
    """One modality: its bands, and whether it lies on ``grid`` (None: it is the reference)."""
    path = _absolute(source)
    with _open_raster(path) as ds:
        g = GridBox.from_dataset(ds)
        idx = resolve_bands(path, ds, bands)
        if grid is None:
            check_reference(path, g)
            aligned = True
        else:
            aligned = _check_alignable(path, g, grid)
        mode = resampling or ("bilinear" if name in CONTINUOUS_MODALITIES else "nearest")
        if mode not in RESAMPLING:
            raise InputError(f"resampling {mode!r} for {name!r}: use {list(RESAMPLING)}")
        descr = tuple(ds.descriptions[i - 1] or f"band{i}" for i in idx)
    return Modality(name, path, idx, descr, mode, aligned, g)


def _absolute(path: str) -> str:
    """Absolute local paths, so tasks on other processes/machines find the same files."""
    if "://" in path or path.startswith("/vsi") or not Path(path).exists():
        return path
    return str(Path(path).resolve())


def _check_datum(path: str, grid: GridBox) -> None:
    """Refuse a grid geoseg cannot place on the Earth: a CRS without datum (a local or
    engineering CS, a damaged definition), a geotransform with infinite, NaN or zero values,
    or coordinates outside what its CRS can map (ground areas and warping need all three)."""
    from pyproj import CRS as ProjCRS
    from pyproj import Transformer
    from pyproj.exceptions import CRSError, ProjError

    try:
        crs = ProjCRS.from_user_input(grid.crs.to_wkt())
        ok = crs.is_geographic or crs.geodetic_crs is not None
    except CRSError:
        ok = False
    if not ok:
        raise GridError(f"{path}: its CRS has no datum (a local coordinate system, or a damaged "
                        "definition), so areas and grids cannot be computed; assign a real one "
                        f"(gdal_edit.py -a_srs EPSG:XXXX {path})")
    t = grid.transform
    cx, cy = t * (grid.width / 2, grid.height / 2)
    try:
        if crs.is_geographic:
            lon, lat = cx, cy
        else:
            lon, lat = Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True).transform(cx, cy)
        placed = all(math.isfinite(v) for v in (*t[:6], lon, lat)) and t.a != 0 and t.e != 0 \
            and abs(lat) <= 90.0 + 1e-6  # fmt: skip
    except (CRSError, ProjError):
        placed = False
    if not placed:
        raise GridError(f"{path}: its geotransform ({', '.join(f'{v:g}' for v in t[:6])}) does not "
                        "place it on the Earth in its CRS (infinite, zero or out-of-range values: "
                        f"a damaged header); fix it (gdal_edit.py -a_ullr ... {path}) or replace "
                        "the file")  # fmt: skip


def _has_mask(ds) -> bool:
    from rasterio.enums import MaskFlags

    return any(MaskFlags.all_valid not in flags for flags in ds.mask_flag_enums)


def _check_alignable(path: str, g: GridBox, ref: GridBox) -> bool:
    """True if ``g`` already is the reference grid; raise if it cannot be warped onto it."""
    if g.crs is None:
        raise GridError(f"{path}: raster has no CRS, so it cannot be aligned with the reference; "
                        f"assign one (gdal_edit.py -a_srs EPSG:XXXX {path})")
    _check_datum(path, g)
    if not g.is_rectilinear:
        raise GridError(f"{path}: rotated/sheared geotransform is not supported; "
                        f"make it north-up first (gdalwarp {path} northup.tif)")
    if g.same_grid(ref):
        return True
    left, bottom, right, top = transform_bounds(g.crs, ref.crs, *g.bounds, densify_pts=21)
    rl, rb, rr, rt = ref.bounds
    if left >= rr or right <= rl or bottom >= rt or top <= rb:
        raise GridError(
            f"{path}: does not overlap the reference raster (its bounds in the reference CRS are "
            f"{(round(left, 3), round(bottom, 3), round(right, 3), round(top, 3))}, reference "
            f"{tuple(round(v, 3) for v in ref.bounds)}); give rasters of the same area"
        )
    return False
