"""STAC catalogs (pystac) as geoseg catalogs: one Item per scene, its assets carry roles.

Mapping (both directions, so YAML -> STAC -> YAML gives the same scenes):

- Item ``id`` -> scene id; ``datetime`` -> scene datetime; ``geoseg:split`` or
  ``ml-aoi:split`` (``validate`` means ``val``) -> split.
- An asset whose roles include ``data`` -> a modality, named by its ``geoseg:modality`` field
  or else its key; ``geoseg:bands`` selects bands, ``geoseg:roles`` names them (else the
  ``eo:common_name`` / ``common_name`` of ``bands``/``eo:bands`` entries), ``geoseg:resampling``.
- An asset whose roles include ``labels`` -> labels; ``label:type`` or the extension gives the
  kind, ``geoseg:class_field`` (or the item's first ``label:properties``), ``geoseg:encoding``,
  ``geoseg:class_value``, ``geoseg:band``, ``geoseg:ignore``, ``geoseg:layer``.
- The class table: ``classification:classes`` (value, name or description, color_hint) of the
  Collection/ItemCollection, else of the first label asset that has one.

Relative hrefs resolve against the Item's own file, else the file that was read; http(s),
s3, gs and az URLs are read through GDAL's virtual file systems (/vsicurl/, /vsis3/...).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import pystac
from pydantic import ValidationError

from geoseg.bundle.card import ClassInfo
from geoseg.catalog.spec import (
    Catalog,
    CatalogScene,
    CatalogSpec,
    LabelSpec,
    ModalitySpec,
    config_error,
    is_local,
    resolve_href,
)
from geoseg.errors import ConfigError

STAC_TYPES = {"FeatureCollection", "Collection", "Catalog", "Feature"}
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "validate": "val",
                 "validation": "val", "test": "test", "testing": "test"}  # fmt: skip
SKIP_ROLES = {"thumbnail", "overview", "metadata", "visual-preview"}


def is_stac(path: str | Path) -> bool:
    """True for a JSON file that is a STAC Item, ItemCollection, Collection or Catalog."""
    path = Path(path)
    if path.suffix.lower() not in {".json", ".geojson"}:
        return False
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("type") in STAC_TYPES and (
        "stac_version" in data or data.get("type") == "FeatureCollection")


def load_stac(path: str | Path) -> Catalog:
    """Read a STAC file into a Catalog (items of a Collection/Catalog are followed, recursively)."""
    path = Path(path).resolve()
    try:
        data = json.loads(path.read_text())
        kind = data.get("type")
        parent: Any = None
        if kind == "FeatureCollection":
            parent = pystac.ItemCollection.from_dict(data, preserve_dict=False)
            items = list(parent.items)
        elif kind == "Feature":
            items = [pystac.Item.from_file(str(path))]
        else:
            parent = pystac.read_file(str(path))
            items = list(parent.get_items(recursive=True))
    except (pystac.STACError, ValueError, KeyError, TypeError, OSError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{path}: not a readable STAC file ({detail}); check it with a STAC "
                          "validator") from None  # fmt: skip
    if not items:
        raise ConfigError(f"{path}: the STAC file has no items; add one Item per scene")
    scenes = [scene_from_item(it, path.parent, path) for it in items]
    raw_classes = _classes_field(parent, items)
    spec_data = {
        "name": getattr(parent, "id", "") or _extra(parent).get("id") or path.stem,
        "description": (getattr(parent, "description", "") or "") if parent else "",
        "classes": [_class_from_stac(c) for c in raw_classes],
        "scenes": scenes,
    }
    try:
        spec = CatalogSpec.model_validate(spec_data)
    except ValidationError as exc:
        raise config_error(exc, path, spec_data, None, CatalogSpec) from None
    return Catalog(spec, path)


def scene_from_item(item: pystac.Item, base: Path, source: Path) -> CatalogScene:
    """One scene from one Item (hrefs made absolute)."""
    item_base = Path(os.path.dirname(item.get_self_href())) if item.get_self_href() else base
    modalities: dict[str, Any] = {}
    labels: Any = None
    for key, asset in item.assets.items():
        roles = set(asset.roles or [])
        href = resolve_href(asset.href, item_base)
        extra = asset.extra_fields
        if "labels" in roles or "label" in roles:
            labels = _label_from_asset(href, extra, item)
        elif "data" in roles or "geoseg:modality" in extra:
            if roles & SKIP_ROLES and "data" not in roles:
                continue
            name = extra.get("geoseg:modality", key)
            modalities[name] = _modality_from_asset(href, extra)
    split = item.properties.get("geoseg:split", item.properties.get("ml-aoi:split"))
    data = {"id": item.id, "modalities": modalities, "labels": labels,
            "split": SPLIT_ALIASES.get(str(split).lower(), split) if split else None,
            "datetime": None if item.properties.get("geoseg:datetime_unknown") else item.datetime}
    try:
        return CatalogScene.model_validate(data)
    except ValidationError as exc:
        raise config_error(exc, f"{source} (item {item.id!r})", data, None,
                           CatalogScene) from None  # fmt: skip


def _modality_from_asset(href: str, extra: dict[str, Any]) -> dict[str, Any]:
    bands = extra.get("geoseg:bands")
    roles = extra.get("geoseg:roles")
    if roles is None:
        names = _common_names(extra)
        if names and all(names):
            if bands is None:
                roles = names
            elif all(isinstance(b, int) and 1 <= b <= len(names) for b in bands):
                roles = [names[b - 1] for b in bands]
    out: dict[str, Any] = {"path": href}
    if bands is not None:
        out["bands"] = bands
    if roles is not None:
        out["roles"] = roles
    if "geoseg:resampling" in extra:
        out["resampling"] = extra["geoseg:resampling"]
    return out


def _common_names(extra: dict[str, Any]) -> list[str | None]:
    """Band common names from STAC 1.1 ``bands`` or the eo extension's ``eo:bands``."""
    bands = extra.get("bands") or extra.get("eo:bands") or []
    return [b.get("eo:common_name") or b.get("common_name") for b in bands if isinstance(b, dict)]


def _label_from_asset(href: str, extra: dict[str, Any], item: pystac.Item) -> dict[str, Any]:
    out: dict[str, Any] = {"path": href}
    kind = item.properties.get("label:type")
    if kind in ("raster", "vector"):
        out["kind"] = kind
    field = extra.get("geoseg:class_field")
    props = item.properties.get("label:properties")
    if field is None and props and kind != "raster":
        field = props[0]
    if field is not None:
        out["class_field"] = field
    for key in ("class_value", "encoding", "band", "ignore", "layer"):
        if f"geoseg:{key}" in extra:
            out[key] = extra[f"geoseg:{key}"]
    return out


def _extra(obj: Any) -> dict[str, Any]:
    return getattr(obj, "extra_fields", None) or {}


def _classes_field(parent: Any, items: list[pystac.Item]) -> list[dict[str, Any]]:
    if parent is not None:
        extra = _extra(parent)
        if "classification:classes" in extra:
            return extra["classification:classes"]
        summaries = getattr(parent, "summaries", None)
        if summaries is not None and summaries.get_list("classification:classes"):
            return summaries.get_list("classification:classes")
    for it in items:
        for asset in it.assets.values():
            if "labels" in (asset.roles or []) and "classification:classes" in asset.extra_fields:
                return asset.extra_fields["classification:classes"]
    return []


def _class_from_stac(c: dict[str, Any]) -> dict[str, Any]:
    out = {"id": c.get("value"), "name": c.get("name") or c.get("description") or
           f"class_{c.get('value')}"}  # fmt: skip
    if c.get("color_hint"):
        out["color"] = "#" + str(c["color_hint"]).lstrip("#")
    return out


def _class_to_stac(c: ClassInfo) -> dict[str, Any]:
    return {"value": c.id, "name": c.name, "description": c.name,
            "color_hint": c.color.lstrip("#").upper()}  # fmt: skip


# --------------------------------------------------------------------------- export


def to_item_collection(catalog: Catalog, relative_to: str | Path | None = None,
                       footprints: bool = True) -> pystac.ItemCollection:  # fmt: skip
    """The catalog as a STAC ItemCollection (hrefs relative to ``relative_to`` when given)."""
    classes = [_class_to_stac(c) for c in catalog.classes]
    items = [_item(s, classes, relative_to, footprints) for s in catalog.scenes]
    extra = {"classification:classes": classes} if classes else {}
    if catalog.spec.name:
        extra["id"] = catalog.spec.name
    return pystac.ItemCollection(items, extra_fields=extra)


def write_stac(catalog: Catalog, path: str | Path) -> Path:
    """Write the catalog as one STAC ItemCollection JSON file (hrefs relative to it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ic = to_item_collection(catalog, relative_to=path.parent.resolve())
    path.write_text(json.dumps(ic.to_dict(transform_hrefs=False), indent=2))
    return path


def _item(s: CatalogScene, classes: list[dict[str, Any]], relative_to: str | Path | None,
          footprints: bool) -> pystac.Item:  # fmt: skip
    def href(p: str) -> str:
        if relative_to is None or not is_local(p):
            return p.replace("/vsicurl/", "", 1) if p.startswith("/vsicurl/") else p
        return os.path.relpath(p, relative_to)

    bbox = _bbox(s) if footprints else None
    geometry = None if bbox is None else {
        "type": "Polygon", "coordinates": [[[bbox[0], bbox[1]], [bbox[2], bbox[1]],
                                            [bbox[2], bbox[3]], [bbox[0], bbox[3]],
                                            [bbox[0], bbox[1]]]]}  # fmt: skip
    when = s.datetime or dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    props: dict[str, Any] = {}
    if s.split:
        props["geoseg:split"] = s.split
    if s.datetime is None:
        props["geoseg:datetime_unknown"] = True  # STAC needs a datetime; this one is a stand-in
    item = pystac.Item(s.id, geometry, bbox, when, props)
    for name, m in s.modalities.items():
        extra: dict[str, Any] = {"geoseg:modality": name}
        if m.bands is not None:
            extra["geoseg:bands"] = m.bands
        if m.roles is not None:
            extra["geoseg:roles"] = m.roles
        if m.resampling:
            extra["geoseg:resampling"] = m.resampling
        item.add_asset(name, pystac.Asset(href(m.path), roles=["data"], extra_fields=extra))
    if s.labels:
        lab = s.labels
        extra = {f"geoseg:{k}": v for k, v in lab.model_dump(exclude_defaults=True).items()
                 if k not in ("path", "kind")}  # fmt: skip
        if classes:
            extra["classification:classes"] = classes
        item.properties["label:type"] = lab.kind
        item.add_asset("labels", pystac.Asset(href(lab.path), roles=["labels"], extra_fields=extra))
    return item


def _bbox(s: CatalogScene) -> list[float] | None:
    """WGS84 bounds of the reference raster, or None if it cannot be read."""
    import rasterio
    from rasterio.warp import transform_bounds

    try:
        with rasterio.open(s.modalities[s.reference].path) as ds:
            if ds.crs is None:
                return None
            return list(transform_bounds(ds.crs, "EPSG:4326", *ds.bounds, densify_pts=21))
    except Exception:
        return None


# re-exported for callers that build scenes by hand
__all__ = ["LabelSpec", "ModalitySpec", "is_stac", "load_stac", "scene_from_item",
           "to_item_collection", "write_stac"]  # fmt: skip
