"""Registering scenes: a path under an allowed root, an ``https://``/``s3://`` URL, a STAC Item,
or an uploaded GeoTIFF (streamed to disk with a size limit, validated as a georeferenced raster
before it is accepted; refused uploads leave nothing behind).

A scene is stored as catalog modality specs (``geoseg.catalog.spec.ModalitySpec``): the first is
the main image, the others extra modalities by name; a job maps the main image to its model's
reference modality.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import Field, ValidationError, model_validator

from geoseg._files import safe_name
from geoseg.catalog.spec import ModalitySpec
from geoseg.config import StrictModel, format_validation_error
from geoseg.errors import InputError
from geoseg.service.access import AccessError, check_url, is_url, resolve_path

MAIN = "image"


class UploadTooLarge(InputError):
    """An upload exceeds the server's size limit."""


class RasterRef(StrictModel):
    """One raster of a scene in a request: a path under an allowed root or a URL."""

    path: str | None = Field(None, description="path relative to an allowed root")
    url: str | None = Field(None, description="https:// or s3:// URL")
    root: str | None = Field(None, description="allowed root holding path (default: any)")
    bands: list[int | str] | None = Field(None, description="bands to use (default all)")
    roles: list[str] | None = Field(None, description="role of each used band (red, nir, dsm...)")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"url": data} if "://" in data else {"path": data}
        return data

    @model_validator(mode="after")
    def _one(self) -> RasterRef:
        if (self.path is None) == (self.url is None):
            raise ValueError("give either path (relative to an allowed root) or url")
        return self


class SceneRequest(StrictModel):
    """``POST /api/v1/scenes`` as JSON: a raster (path or url) with extra modalities, or a STAC
    Item whose data assets are the modalities."""

    name: str | None = Field(None, max_length=100, description="label (default: file name)")
    path: str | None = None
    url: str | None = None
    root: str | None = None
    bands: list[int | str] | None = None
    roles: list[str] | None = None
    modalities: dict[str, RasterRef] = Field(default_factory=dict,
                                             description="extra modalities by name (dsm, dem...)")
    stac_item: dict[str, Any] | None = Field(None, description="a STAC Item (JSON object)")

    @model_validator(mode="after")
    def _one(self) -> SceneRequest:
        given = [k for k in ("path", "url", "stac_item") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of path, url or stac_item (or upload a GeoTIFF "
                             "as the request body)")  # fmt: skip
        return self


def _raster_spec(ref: RasterRef, roots: Sequence[Path], what: str) -> dict[str, Any]:
    if ref.url is not None:
        location = check_url(ref.url, f"{what}.url")
    else:
        location = str(resolve_path(ref.path or "", roots, ref.root, f"{what}.path"))
    spec = ModalitySpec(path=location, bands=ref.bands, roles=ref.roles)
    return spec.model_dump(exclude_none=True)


def scene_from_request(req: SceneRequest, roots: Sequence[Path]) -> tuple[str, str, dict[str, Any]]:
    """``(name, kind, modalities)`` of a JSON scene request, every location checked."""
    if req.stac_item is not None:
        return _scene_from_stac(req, roots)
    main = RasterRef(path=req.path, url=req.url, root=req.root, bands=req.bands, roles=req.roles)
    mods = {MAIN: _raster_spec(main, roots, MAIN)}
    for name, ref in req.modalities.items():
        if name == MAIN:
            raise InputError(f"modalities.{MAIN}: {MAIN!r} is the main raster (path/url); "
                             "name extra modalities after what they hold (dsm, dem...)")  # fmt: skip
        _check_modality_name(name)
        mods[name] = _raster_spec(ref, roots, f"modalities.{name}")
    location = mods[MAIN]["path"]
    name = req.name or Path(location.split("?")[0]).stem
    return name, "url" if is_url(location) else "path", mods


def _check_modality_name(name: str) -> None:
    import re

    from geoseg.catalog.spec import NAME_PATTERN

    if not re.match(NAME_PATTERN, name):
        raise InputError(f"modalities.{name}: names are lower case letters, digits and _ "
                         "(e.g. dsm, dem)")  # fmt: skip


def _scene_from_stac(req: SceneRequest, roots: Sequence[Path]) -> tuple[str, str, dict[str, Any]]:
    """Modalities from a STAC Item's data assets (hrefs: URLs, or paths under allowed roots)."""
    import pystac

    from geoseg.catalog.stac import scene_from_item

    data = dict(req.stac_item or {})
    data["links"] = []  # self/parent links are never followed
    try:
        item = pystac.Item.from_dict(data, preserve_dict=False)
    except Exception as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"stac_item: not a STAC Item ({detail}); send an Item JSON object") from None
    for key, asset in item.assets.items():
        href = asset.href
        if "://" in href or href.startswith("/vsi"):
            asset.href = check_url(href, f"stac_item.assets.{key}.href")
        else:
            asset.href = str(resolve_path(href, roots, req.root, f"stac_item.assets.{key}.href"))
    try:
        scene = scene_from_item(item, Path("/nonexistent"), Path("stac_item"))
    except Exception as exc:
        raise InputError(f"stac_item: {str(exc).splitlines()[0]}") from None
    if not scene.modalities:
        raise InputError("stac_item: no data asset; give the rasters the role 'data'")
    mods = {n: m.model_dump(exclude_none=True) for n, m in scene.modalities.items()}
    return req.name or item.id, "stac", mods


def parse_scene_request(data: Any) -> SceneRequest:
    """Validate a JSON scene request; a problem is one line naming the key."""
    try:
        return SceneRequest.model_validate(data)
    except ValidationError as exc:
        raise InputError(format_validation_error(exc, "scene", model=SceneRequest, data=data)) from None


# --------------------------------------------------------------------------- reading rasters


def describe_raster(location: str, what: str = "raster") -> dict[str, Any]:
    """Size, bands, CRS and WGS 84 bounds of a georeferenced raster, plus the bands and the
    percentile stretch the map shows; a non-raster or one without georeferencing is refused."""
    import numpy as np
    import rasterio
    from rasterio.warp import transform_bounds

    from geoseg.runtime import gdal_env

    try:
        with gdal_env(), rasterio.open(location) as ds:
            if ds.crs is None or ds.transform.is_identity:
                raise InputError(f"{what}: has no georeferencing (CRS and geotransform); give a "
                                 "GeoTIFF with its CRS")  # fmt: skip
            if ds.width < 1 or ds.height < 1:
                raise InputError(f"{what}: empty raster")
            bounds = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds, densify_pts=21)
            rgb = _display_bands(ds)
            scale = max(1.0, max(ds.width, ds.height) / 512)
            shape = (len(rgb), max(1, int(ds.height / scale)), max(1, int(ds.width / scale)))
            sample = ds.read(rgb, out_shape=shape, masked=True).astype("float64")
            stretch = []
            for band in sample:
                values = band.compressed()
                values = values[np.isfinite(values)]
                lo, hi = (np.percentile(values, [2, 98]) if values.size else (0.0, 1.0))
                stretch.append([float(lo), float(hi) if hi > lo else float(lo) + 1.0])
            return {"width": ds.width, "height": ds.height, "count": ds.count,
                    "dtype": ds.dtypes[0], "crs": ds.crs.to_string(), "driver": ds.driver,
                    "bounds": [round(b, 7) for b in bounds], "display_bands": rgb,
                    "stretch": stretch, "nodata": ds.nodata}  # fmt: skip
    except InputError:
        raise
    except Exception as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{what}: not a raster GDAL can read ({detail}); give a GeoTIFF") from None


def _display_bands(ds: Any) -> list[int]:
    """Bands shown on the map: red, green, blue by colour interpretation or description, else
    the first three, else the first (grey)."""
    from rasterio.enums import ColorInterp

    roles = {ColorInterp.red: "r", ColorInterp.green: "g", ColorInterp.blue: "b"}
    found: dict[str, int] = {}
    for i, ci in enumerate(ds.colorinterp, start=1):
        if ci in roles:
            found.setdefault(roles[ci], i)
    for i, desc in enumerate(ds.descriptions, start=1):
        key = {"red": "r", "green": "g", "blue": "b"}.get((desc or "").strip().lower())
        if key:
            found.setdefault(key, i)
    if all(k in found for k in "rgb"):
        return [found["r"], found["g"], found["b"]]
    return [1, 2, 3] if ds.count >= 3 else [1]


def describe_scene(modalities: dict[str, Any], max_pixels: int) -> dict[str, Any]:
    """What the service keeps of a scene: its main raster's description; every modality is
    opened (a bad one is refused now, not when a job runs)."""
    info: dict[str, Any] = {}
    for i, (name, spec) in enumerate(modalities.items()):
        d = describe_raster(spec["path"], f"{name} raster" if i else "raster")
        if i == 0:
            info = d
    pixels = info["width"] * info["height"]
    if pixels > max_pixels:
        raise InputError(f"raster: {info['width']}x{info['height']} = {pixels} pixels exceeds "
                         f"this server's limit of {max_pixels}; cut the scene or ask for a "
                         "higher --max-pixels")  # fmt: skip
    return info


# --------------------------------------------------------------------------- uploads


async def receive_upload(chunks: AsyncIterator[bytes], content_type: str, uploads: Path,
                         filename: str | None, limit: int) -> tuple[str, Path]:  # fmt: skip
    """Stream an upload (raw body or multipart ``file`` field) into a new folder of
    ``uploads``; returns ``(scene id, file)``. On any error the folder is removed."""
    scene_id = uuid.uuid4().hex
    folder = uploads / scene_id
    folder.mkdir(parents=True, exist_ok=False)
    part = folder / ".upload.partial"
    try:
        if content_type.startswith("multipart/form-data"):
            name = await _receive_multipart(chunks, content_type, part, limit)
        else:
            name = filename
            await _receive_raw(chunks, part, limit)
        stem = safe_name(Path(name or "upload.tif").stem, "upload")[:80]
        target = folder / f"{stem}.tif"
        os.replace(part, target)
        return scene_id, target
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _too_large(limit: int) -> UploadTooLarge:
    return UploadTooLarge(f"upload: larger than this server's limit of {limit / 2**20:.0f} MiB; "
                          "register the file by path (--allow-root) or URL instead")  # fmt: skip


async def _receive_raw(chunks: AsyncIterator[bytes], part: Path, limit: int) -> None:
    size = 0
    with open(part, "wb") as fh:
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            fh.write(chunk)
    if size == 0:
        raise InputError("upload: empty body; send the GeoTIFF's bytes")


async def _receive_multipart(chunks: AsyncIterator[bytes], content_type: str, part: Path,
                             limit: int) -> str | None:  # fmt: skip
    """The ``file`` field of a multipart body, streamed to ``part``; returns its file name."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise InputError("upload: multipart body without a boundary; send multipart/form-data")
    with open(part, "wb") as fh:
        field = _FileField(fh, limit)
        parser = MultipartParser(boundary, field.callbacks())
        async for chunk in chunks:
            parser.write(chunk)
        parser.finalize()
    if not field.found or field.size == 0:
        raise InputError("upload: no file field (or an empty one); send the GeoTIFF as the "
                         "multipart field 'file'")  # fmt: skip
    return field.filename


class _FileField:
    """Callbacks of a ``MultipartParser`` writing the ``file`` field (one only) to ``fh``; the
    other fields are skipped."""

    def __init__(self, fh: BinaryIO, limit: int):
        self.fh, self.limit = fh, limit
        self.headers: dict[bytes, bytes] = {}
        self.field: str | None = None
        self.filename: str | None = None
        self.size = 0
        self.found = False
        self.header, self.value = b"", b""

    def callbacks(self) -> dict[str, Any]:
        return {"on_part_begin": self.on_part_begin, "on_header_field": self.on_header_field,
                "on_header_value": self.on_header_value, "on_header_end": self.on_header_end,
                "on_headers_finished": self.on_headers_finished,
                "on_part_data": self.on_part_data}  # fmt: skip

    def on_part_begin(self) -> None:
        self.headers, self.field = {}, None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[self.header.lower()] = self.value
        self.header, self.value = b"", b""

    def on_headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        _, p = parse_options_header(self.headers.get(b"content-disposition", b""))
        self.field = p.get(b"name", b"").decode("utf-8", "replace")
        fname = p.get(b"filename")
        if self.field == "file":
            if self.found:
                raise InputError("upload: more than one file field; send one GeoTIFF")
            self.found = True
            self.filename = fname.decode("utf-8", "replace") if fname else None

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.field != "file":
            return
        self.size += end - start
        if self.size > self.limit:
            raise _too_large(self.limit)
        self.fh.write(data[start:end])


def accept_upload(path: Path, max_pixels: int) -> dict[str, Any]:
    """Validate an uploaded file as a georeferenced GeoTIFF; returns its description."""
    info = describe_scene({MAIN: {"path": str(path)}}, max_pixels)
    if info["driver"] != "GTiff":
        raise InputError(f"upload: a {info['driver']} raster; upload a GeoTIFF")
    return info


__all__ = ["MAIN", "AccessError", "SceneRequest", "accept_upload", "describe_scene",
           "parse_scene_request", "receive_upload", "scene_from_request"]
