"""Validating a catalog against its files: every scene's rasters exist and open, bands resolve,
grids overlap, labels match the class table, and scenes agree on modalities and band counts.
Reads headers (and, unless told not to, a probe of the pixels) with rasterio and pyogrio.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from geoseg._files import is_local
from geoseg.catalog.loader import Catalog
from geoseg.catalog.spec import CatalogScene, LabelSpec, ModalitySpec
from geoseg.errors import GeosegError, InputError
from geoseg.scene.classes import ClassInfo


@dataclass
class CatalogCheck:
    """Result of ``validate_catalog``: one row per scene and every problem found."""

    rows: list[dict[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def table(self) -> str:
        """The rows as a fixed-width text table."""
        return format_table(self.rows)


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Plain fixed-width text table of dict rows (keys of the first row are the columns)."""
    if not rows:
        return "(no rows)"
    cols = list(rows[0])
    cells = [[str(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
              for row in cells]  # fmt: skip
    return "\n".join(lines)


def validate_catalog(catalog: Catalog, pixels: bool = True) -> CatalogCheck:
    """Check every scene: files exist and open, bands resolve, grids overlap, labels match.

    Args:
        pixels: also read the data (a decimated probe of each raster, every label value
            against the class table); off, only headers are read.
    """
    check = CatalogCheck()
    counts: dict[str, dict[str, int]] = {}
    bad: set[str] = set()
    for s in catalog.scenes:
        row, problems, counts[s.id] = _check_scene(s, catalog.classes, pixels)
        check.rows.append(row)
        check.problems += [f"scene {s.id!r}: {p}" for p in problems]
        bad |= {s.id} if problems else set()
    for sid, problem in _consistency(catalog.scenes, counts):
        check.problems.append(f"scene {sid!r}: {problem}")
        bad.add(sid)
    for row in check.rows:
        row["status"] = "PROBLEM" if row["scene"] in bad else "ok"
    return check


def _check_scene(s: CatalogScene, classes: Sequence[ClassInfo],
                 pixels: bool) -> tuple[dict[str, str], list[str], dict[str, int]]:  # fmt: skip
    row = {"scene": s.id, "split": s.split or "-", "modalities": "", "size": "?", "crs": "?",
           "res": "?", "labels": s.labels.kind if s.labels else "-", "status": ""}  # fmt: skip
    problems: list[str] = []
    counts: dict[str, int] = {}
    for name, m in s.modalities.items():
        try:
            counts[name] = _check_modality(m, pixels)
        except GeosegError as exc:
            problems.append(f"modality {name!r}: {exc}")
    row["modalities"] = " ".join(f"{n}:{counts.get(n, '?')}" for n in s.modalities)
    if problems:
        return row, problems, counts
    try:
        grid = s.open().grid
    except GeosegError as exc:
        return row, [str(exc)], counts
    row["size"] = f"{grid.width}x{grid.height}"
    row["crs"] = _crs_name(grid.crs)
    row["res"] = f"{grid.resolution[0]:.4g}"
    if s.labels:
        problems += [f"labels: {p}" for p in _check_labels(s.labels, grid, classes, pixels)]
    return row, problems, counts


def _open(path: str):
    import rasterio
    from rasterio.errors import RasterioIOError

    from geoseg.scene.scene import check_limits

    if is_local(path) and not os.path.exists(path):
        raise InputError(f"{path}: file not found; fix the path in the catalog")
    try:
        ds = rasterio.open(path)
    except RasterioIOError as exc:
        detail = str(exc).splitlines()[0]
        raise InputError(f"{path}: cannot be opened as a raster ({detail}); replace the "
                         "file or fix its path") from None  # fmt: skip
    try:
        check_limits(path, ds)  # absurd sizes and decompression bombs: before any read
    except InputError:
        ds.close()
        raise
    return ds


def _check_modality(m: ModalitySpec, pixels: bool) -> int:
    from geoseg.scene.scene import resolve_bands

    with _open(m.path) as ds:
        idx = resolve_bands(m.path, ds, m.bands)
        if m.roles is not None and m.bands is None and len(m.roles) != ds.count:
            raise InputError(f"{m.path}: roles names {len(m.roles)} band(s) but the file has "
                             f"{ds.count}; select bands with bands: or fix roles")  # fmt: skip
        if pixels:
            _probe(ds, m.path, idx[0])
    return len(idx)


def _probe(ds, path: str, band: int) -> None:
    """Read a decimated overview of a band: truncated or corrupt files fail here."""
    from rasterio.errors import RasterioError

    from geoseg.scene.scene import read_failed

    h, w = min(ds.height, 256), min(ds.width, 256)
    try:
        ds.read(band, out_shape=(h, w))
    except RasterioError as exc:
        raise read_failed(path, exc) from None


def _crs_name(crs: Any) -> str:
    if crs is None:
        return "none"
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else (crs.to_dict().get("proj") or "custom")


def _check_labels(lab: LabelSpec, grid: Any, classes: Sequence[ClassInfo],
                  pixels: bool) -> list[str]:  # fmt: skip
    try:
        if lab.kind == "raster":
            values, crs, bounds = _raster_label_values(lab, pixels)
        else:
            values, crs, bounds = _vector_label_values(lab, pixels)
    except GeosegError as exc:
        return [str(exc)]
    problems = []
    if crs is None:
        problems.append(f"{lab.path}: has no CRS; assign one so labels can be placed on the scene")
    elif not _overlaps(bounds, crs, grid):
        problems.append(f"{lab.path}: does not overlap the scene's grid; check that labels and "
                        "imagery cover the same area")  # fmt: skip
    if not classes:
        problems.append("the catalog has labels but no classes: table; add one (id, name, color)")
    elif values is not None:
        known: set = ({c.color for c in classes} if lab.encoding == "rgb"
                      else {c.id for c in classes} | {c.name for c in classes})  # fmt: skip
        extra = sorted((v for v in values if v not in known), key=str)
        if extra:
            what = "colours" if lab.encoding == "rgb" else "values"
            problems.append(f"{lab.path}: label {what} {extra[:8]} are not in the class table "
                            f"({len(classes)} classes); add them to classes: or set ignore:")
    return problems


def _raster_label_values(lab: LabelSpec, pixels: bool) -> tuple[set | None, Any, tuple]:
    import numpy as np

    with _open(lab.path) as ds:
        need = 3 if lab.encoding == "rgb" else lab.band
        if ds.count < need:
            raise InputError(f"{lab.path}: has {ds.count} band(s), labels need band {need}; "
                             "fix band: or encoding:")  # fmt: skip
        crs, bounds = ds.crs, tuple(ds.bounds)
        if not pixels:
            return None, crs, bounds
        ignore = lab.ignore if lab.ignore is not None else ds.nodata
        values: set = set()
        for _, win in ds.block_windows(1):
            if lab.encoding == "rgb":
                rgb = ds.read([1, 2, 3], window=win).reshape(3, -1).T.astype(np.uint32)
                packed = np.unique((rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2])
                values |= {f"#{int(v):06x}" for v in packed}
            else:
                vals = np.unique(ds.read(lab.band, window=win))
                values |= {int(v) if float(v).is_integer() else float(v) for v in vals}
            if len(values) > 1024:  # not a class raster; stop scanning
                break
        if ignore is not None and lab.encoding == "ids":
            values.discard(int(ignore) if float(ignore).is_integer() else ignore)
        return values, crs, bounds


def _vector_label_values(lab: LabelSpec, pixels: bool) -> tuple[set | None, Any, tuple]:
    import pyogrio
    from rasterio.crs import CRS

    if is_local(lab.path) and not os.path.exists(lab.path):
        raise InputError(f"{lab.path}: file not found; fix the path in the catalog")
    try:
        info = pyogrio.read_info(lab.path, layer=lab.layer, force_total_bounds=True)
    except Exception as exc:  # pyogrio raises several unrelated error types
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{lab.path}: cannot be opened as vectors ({detail}); replace the "
                         "file or fix its path/layer") from None  # fmt: skip
    fields = list(info["fields"])
    crs = CRS.from_user_input(info["crs"]) if info.get("crs") else None
    bounds = tuple(info["total_bounds"])
    if lab.class_field is None:
        return {lab.class_value}, crs, bounds
    if lab.class_field not in fields:
        raise InputError(f"{lab.path}: no attribute {lab.class_field!r} (it has {fields}); "
                         "fix class_field")  # fmt: skip
    if not pixels:
        return None, crs, bounds
    df = pyogrio.read_dataframe(lab.path, layer=lab.layer, columns=[lab.class_field],
                                read_geometry=False)  # fmt: skip
    values = {v.item() if hasattr(v, "item") else v for v in df[lab.class_field].dropna().unique()}
    return values, crs, bounds


def _overlaps(bounds: tuple, crs: Any, grid: Any) -> bool:
    from rasterio.warp import transform_bounds

    try:
        left, bottom, right, top = transform_bounds(crs, grid.crs, *bounds, densify_pts=21)
    except Exception:
        return False
    gl, gb, gr, gt = grid.bounds
    return left < gr and right > gl and bottom < gt and top > gb


def _consistency(scenes: Sequence[CatalogScene],
                 counts: Mapping[str, Mapping[str, int]]) -> list[tuple[str, str]]:  # fmt: skip
    """Modalities and band counts every scene should share (those of the majority)."""
    from collections import Counter

    problems = []
    n = len(scenes)
    names = Counter(name for s in scenes for name in s.modalities)
    for name, have in names.items():
        if have * 2 <= n:
            continue  # a minority modality: not expected of every scene
        bands = Counter(c[name] for c in counts.values() if name in c)
        usual = bands.most_common(1)[0][0] if bands else None
        for s in scenes:
            if name not in s.modalities:
                problems.append((s.id, f"has no modality {name!r} that {have} of {n} scenes "
                                       f"have; add it to the scene or remove the scene"))
            elif usual is not None and counts[s.id].get(name, usual) != usual:
                problems.append((s.id, f"modality {name!r} has {counts[s.id][name]} band(s) but "
                                       f"{bands[usual]} other scene(s) have {usual}; select "
                                       f"{usual} with bands:"))  # fmt: skip
    return problems
