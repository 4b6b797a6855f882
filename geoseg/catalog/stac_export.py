"""Writing a catalog as STAC: one Item per scene in an ItemCollection, the mapping of
``geoseg.catalog.stac`` read backwards (so YAML -> STAC -> YAML gives the same scenes)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pystac

from geoseg._files import is_local
from geoseg.catalog.loader import Catalog
from geoseg.catalog.paths import relative_path
from geoseg.catalog.spec import CatalogScene, LabelSpec, ModalitySpec
from geoseg.scene.classes import ClassInfo


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


def _class_to_stac(c: ClassInfo) -> dict[str, Any]:
    return {"value": c.id, "name": c.name, "description": c.name,
            "color_hint": c.color.lstrip("#").upper()}  # fmt: skip


def _item(s: CatalogScene, classes: list[dict[str, Any]], relative_to: str | Path | None,
          footprints: bool) -> pystac.Item:  # fmt: skip
    """One Item: the scene's footprint, split and datetime; one asset per modality and labels."""

    def href(p: str) -> str:
        if relative_to is None or not is_local(p):
            return p.replace("/vsicurl/", "", 1) if p.startswith("/vsicurl/") else p
        return relative_path(p, Path(relative_to))  # absolute when outside the folder

    bbox = _bbox(s) if footprints else None
    when = s.datetime or dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    props: dict[str, Any] = {}
    if s.split:
        props["geoseg:split"] = s.split
    if s.datetime is None:
        props["geoseg:datetime_unknown"] = True  # STAC needs a datetime; this one is a stand-in
    item = pystac.Item(s.id, _polygon(bbox), bbox, when, props)
    for name, m in s.modalities.items():
        item.add_asset(name, pystac.Asset(href(m.path), roles=["data"],
                                          extra_fields=_modality_fields(name, m)))  # fmt: skip
    if s.labels:
        item.properties["label:type"] = s.labels.kind
        item.add_asset("labels", pystac.Asset(href(s.labels.path), roles=["labels"],
                                              extra_fields=_label_fields(s.labels, classes)))
    return item


def _polygon(bbox: list[float] | None) -> dict[str, Any] | None:
    if bbox is None:
        return None
    return {"type": "Polygon", "coordinates": [[[bbox[0], bbox[1]], [bbox[2], bbox[1]],
                                                [bbox[2], bbox[3]], [bbox[0], bbox[3]],
                                                [bbox[0], bbox[1]]]]}  # fmt: skip


def _modality_fields(name: str, m: ModalitySpec) -> dict[str, Any]:
    extra: dict[str, Any] = {"geoseg:modality": name}
    if m.bands is not None:
        extra["geoseg:bands"] = m.bands
    if m.roles is not None:
        extra["geoseg:roles"] = m.roles
    if m.resampling:
        extra["geoseg:resampling"] = m.resampling
    return extra


def _label_fields(lab: LabelSpec, classes: list[dict[str, Any]]) -> dict[str, Any]:
    extra = {f"geoseg:{k}": v for k, v in lab.model_dump(exclude_defaults=True).items()
             if k not in ("path", "kind")}  # fmt: skip
    if classes:
        extra["classification:classes"] = classes
    return extra


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
