"""Reading STAC (pystac) as a catalog spec: one Item per scene, its assets carry roles.

Mapping (both directions, so YAML -> STAC -> YAML gives the same scenes; writing is
``geoseg.catalog.stac_export``):

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

import json
import os
from pathlib import Path
from typing import Any

import pystac

from geoseg.catalog.paths import escape_problem, outside_allowed, resolve_href
from geoseg.catalog.spec import CatalogScene, CatalogSpec
from geoseg.config import parse
from geoseg.errors import ConfigError
from geoseg.limits import check_file_size

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


def read_stac(path: str | Path, allow_outside: bool | None = None) -> CatalogSpec:
    """The catalog spec of a STAC file (items of a Collection/Catalog are followed, recursively;
    hrefs made absolute). ``geoseg.catalog.loader.load_stac`` wraps it in a Catalog.

    Relative hrefs leading outside the file's folder, and URL schemes geoseg does not read,
    are refused unless ``allow_outside`` (default: ``paths.outside_paths_allowed``).
    """
    path = Path(path).resolve()
    check_file_size(path, "STAC file")
    parent, items = _read_items(path)
    if not items:
        raise ConfigError(f"{path}: the STAC file has no items; add one Item per scene")
    root = None if outside_allowed(allow_outside) else path.parent
    scenes = [scene_from_item(it, path.parent, path, root) for it in items]
    spec_data = {
        "name": getattr(parent, "id", "") or _extra(parent).get("id") or path.stem,
        "description": (getattr(parent, "description", "") or "") if parent else "",
        "classes": [_class_from_stac(c) for c in _classes_field(parent, items)],
        "scenes": scenes,
    }
    return parse(CatalogSpec, spec_data, path)


def _read_items(path: Path) -> tuple[Any, list[pystac.Item]]:
    """The parent (ItemCollection, Collection, Catalog or None) and the items of a STAC file."""
    try:
        data = json.loads(path.read_text())
        kind = data.get("type")
        if kind == "FeatureCollection":
            parent = pystac.ItemCollection.from_dict(data, preserve_dict=False)
            return parent, list(parent.items)
        if kind == "Feature":
            return None, [pystac.Item.from_file(str(path))]
        parent = pystac.read_file(str(path))
        return parent, list(parent.get_items(recursive=True))
    except (pystac.STACError, ValueError, KeyError, TypeError, OSError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{path}: not a readable STAC file ({detail}); check it with a STAC "
                          "validator") from None  # fmt: skip


def scene_from_item(item: pystac.Item, base: Path, source: Path,
                    root: Path | None = None) -> CatalogScene:  # fmt: skip
    """One scene from one Item (hrefs made absolute); with a ``root``, hrefs leading outside
    it or using other URL schemes are refused."""
    item_base = Path(os.path.dirname(item.get_self_href())) if item.get_self_href() else base
    modalities: dict[str, Any] = {}
    labels: Any = None
    for key, asset in item.assets.items():
        roles = set(asset.roles or [])
        if root is not None and (problem := escape_problem(asset.href, item_base, root)):
            raise ConfigError(f"{source}: item {item.id!r} asset {key!r}: {problem}")
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
    return parse(CatalogScene, data, f"{source} (item {item.id!r})")


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
