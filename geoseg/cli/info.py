"""`geoseg info`: what a raster or a bundle holds, as a short summary for people
(:func:`summary`) or as JSON for scripts (:func:`describe`)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from geoseg.bundle.card import ModelCard
from geoseg.bundle.folder import CARD, read_card
from geoseg.errors import InputError

#: Bands (or modality band roles) listed before "... and N more".
_MAX_BANDS = 12


def describe(path: str) -> dict[str, Any]:
    """What a raster (size, bands, CRS, grid, masks) or a bundle (its card) holds."""
    card = _card(path)
    if card is not None:
        out = card.model_dump(mode="json")
        out["bundle"] = str(Path(path) / CARD) if Path(path).is_dir() else path
        return out
    return _raster(path)


def summary(path: str) -> str:
    """``describe`` in a few lines: a raster's size, bands with descriptions and colour roles,
    CRS, resolution, nodata; a bundle's architecture, modalities with band roles, classes with
    colours, tile, halo and overlap, metrics."""
    card = _card(path)
    return _card_summary(path, card) if card is not None else _raster_summary(_raster(path))


def _card(path: str) -> ModelCard | None:
    """The card of a bundle folder or an exported ``.onnx`` model; None for anything else
    (pickled checkpoints are refused by ``read_card``)."""
    from geoseg.bundle.formats import is_onnx, read_model_card

    p = Path(path)
    if is_onnx(p) and p.is_file():
        return read_model_card(p)
    if p.is_dir() or (p.is_file() and p.suffix in {".pt", ".pth", ".ckpt", ".pkl"}):
        return read_card(p)
    return None


def _raster(path: str) -> dict[str, Any]:
    import rasterio
    from rasterio.errors import RasterioIOError

    from geoseg.geometry.grid import GridBox

    if not Path(path).exists() and "://" not in path:
        raise InputError(f"{path}: file not found; check the path")
    try:
        with rasterio.open(path) as ds:
            g = GridBox.from_dataset(ds)
            return {
                "path": path, "driver": ds.driver, "width": ds.width, "height": ds.height,
                "count": ds.count, "dtypes": list(ds.dtypes), "nodata": ds.nodata,
                "crs": ds.crs.to_string() if ds.crs else None, **_crs_names(ds.crs),
                "transform": list(g.transform[:6]), "bounds": list(g.bounds),
                "resolution": list(g.resolution),
                "descriptions": list(ds.descriptions),
                "colorinterp": [c.name for c in ds.colorinterp],
                "block_shapes": [list(b) for b in ds.block_shapes],
                "overviews": ds.overviews(1),
                "mask_flags": [[f.name for f in fl] for fl in ds.mask_flag_enums],
            }  # fmt: skip
    except RasterioIOError as exc:
        raise InputError(f"{path}: not a raster or bundle ({exc})") from None


def _crs_names(crs: Any) -> dict[str, str | None]:
    """The CRS's name and the unit of its first axis (``metre``, ``degree``)."""
    if not crs:
        return {"crs_name": None, "units": None}
    from pyproj import CRS

    pcrs = CRS.from_user_input(crs.to_wkt())
    return {"crs_name": pcrs.name, "units": pcrs.axis_info[0].unit_name if pcrs.axis_info else None}


def _rows(title: str, rows: list[tuple[str, str | list[str]]]) -> str:
    """``title`` then one ``label  value`` line per row (a list: one line per item)."""
    lines = [title]
    for label, value in rows:
        for i, text in enumerate([value] if isinstance(value, str) else value):
            lines.append(f"  {label if i == 0 else '':<14}{text}")
    return "\n".join(lines)


def _listed(items: list[str]) -> str:
    more = len(items) - _MAX_BANDS
    return ", ".join(items[:_MAX_BANDS]) + (f" ... and {more} more" if more > 0 else "")


def _band(i: int, text: str | None, colour: str) -> str:
    """``3 blue``, ``1 NIR (undefined)`` -> ``1 NIR``, ``2 elevation (gray)`` -> ``2 elevation``:
    GDAL's colour interpretation is a band role unless undefined or gray (any single band)."""
    role = "" if colour in ("undefined", "gray") else colour
    return f"{i} {text} ({role})" if text and role else f"{i} {text or role}".rstrip()


def _raster_summary(d: dict[str, Any]) -> str:
    n = d["count"]
    bands = [_band(i, text, colour) for i, (text, colour)
             in enumerate(zip(d["descriptions"], d["colorinterp"], strict=True), 1)]  # fmt: skip
    named = any(b != str(i) for i, b in enumerate(bands, 1))
    rx, ry = d["resolution"]
    crs = f"{d['crs']} ({d['crs_name']})" if d["crs"] and d["crs_name"] else d["crs"] or "none"
    return _rows(f"{d['path']} ({d['driver']} raster)", [
        ("size", f"{d['width']} x {d['height']} px, {n} band{'s' if n != 1 else ''} "
                 f"{', '.join(dict.fromkeys(d['dtypes']))}"),
        ("bands", _listed(bands) if named else "no descriptions or colour roles"),
        ("crs", crs),
        ("resolution", f"{rx:g} x {ry:g} {d['units'] or 'units'}"),
        ("nodata", "none" if d["nodata"] is None else f"{d['nodata']:g}"),
        ("overviews", ", ".join(map(str, d["overviews"])) or "none"),
    ])  # fmt: skip


def _number(v: float) -> str:
    return str(v) if isinstance(v, int) else f"{v:.3f}"


def _metrics(metrics: dict[str, Any]) -> list[str]:
    """Scores a line per group (``validation: miou 0.650, ...``), nested tables on their own
    line, free text wrapped."""
    lines, loose = [], []
    for key, value in metrics.items():
        if isinstance(value, dict):
            nums = [f"{k} {_number(v)}" for k, v in value.items() if _is_number(v)]
            if nums:
                lines.append(f"{key}: {', '.join(nums)}")
            for k, v in value.items():
                table = [f"{a} {_number(b)}" for a, b in (v.items() if isinstance(v, dict) else ())
                         if _is_number(b)]  # fmt: skip
                if table:
                    lines.append(f"{key} {k}: {', '.join(table)}")
        elif _is_number(value):
            loose.append(f"{key} {_number(value)}")
        elif isinstance(value, str):
            lines += textwrap.wrap(f"{key}: {value}", 76)
    out = ([", ".join(loose)] if loose else []) + lines
    return out or ["none"]


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _card_summary(path: str, card: ModelCard) -> str:
    args = [f"{k} {v}" for k, v in card.arguments.items() if isinstance(v, str) or _is_number(v)]
    tile = card.tile_size
    tiling = f"tile {tile} px, halo {card.halo} px (default overlap {card.default_overlap(tile)} px)"
    if card.gsd:
        tiling += f", {card.gsd:g} m pixels"
    return _rows(f"{path} (geoseg model, {'trained' if card.trained else 'UNTRAINED: random weights'})", [
        ("architecture", card.architecture + (f" ({', '.join(args)})" if args else "")),
        ("modalities", [f"{name}: {_listed(m.bands)}" for name, m in card.modalities.items()]),
        ("classes", _listed([f"{c.id} {c.name} {c.color}" for c in card.classes])),
        ("tiling", tiling),
        ("metrics", _metrics(card.metrics)),
        *([("description", textwrap.wrap(card.description, 76))] if card.description else []),
    ])  # fmt: skip
