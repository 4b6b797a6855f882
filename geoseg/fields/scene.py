"""The scene whose spectral indices field tools measure: one modality of a raster or of a
catalog scene, with the index names as a derived modality ``indices`` (geoseg.scene.indices).
"""

from __future__ import annotations

from typing import Any

from geoseg.errors import InputError


def split_list(text: str | None) -> list[str]:
    """``"a, b,c"`` -> ``["a", "b", "c"]`` (None or empty: ``[]``)."""
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def open_index_scene(scene: str, index: str, *, roles: str | None = None, bands: str | None = None,
                     scale: float = 1.0, offset: float = 0.0, catalog: str | None = None,
                     modality: str | None = None) -> Any:  # fmt: skip
    """A Scene of one modality (a raster, or a catalog scene's modality) with the ``index``
    names as a derived modality ``indices``; roles from ``roles``, the catalog or the band
    descriptions."""
    from pydantic import ValidationError

    from geoseg.scene.indices import IndexBands
    from geoseg.scene.scene import Scene, parse_band_spec

    names = split_list(index)
    if not names:
        raise InputError("index=: name at least one index, e.g. index=ndvi,ndre")
    band_sel = parse_band_spec(bands)
    name = "image"
    if catalog:
        from geoseg.catalog.loader import load_catalog
        from geoseg.training.data import band_roles, select_bands

        cs = load_catalog(catalog).scene(scene)
        name = modality or cs.reference
        base = cs.open([name], {name: select_bands(cs, name, band_sel)})
        found = band_roles(cs, base, name)
    else:
        base = Scene.open({name: scene}, bands={name: band_sel})
        found = [d.lower() for d in base.modalities[name].descriptions]
    try:
        spec = IndexBands(source=name, indices=names, scale=scale, offset=offset)
    except ValidationError as exc:
        bad = next((n for n in names if n.lower() not in _known()), names[0])
        msg = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise InputError(f"index={bad}: {msg}") from None
    given = split_list(roles)
    count = base.modalities[name].count
    if given and len(given) != count:
        raise InputError(f"roles={','.join(given)}: {len(given)} role(s) for {count} band(s); "
                         "give one role per band read")  # fmt: skip
    return base.with_indices({"indices": spec}, {name: [r.lower() for r in given] or found})


def _known() -> set[str]:
    from geoseg.scene.indices import supported_indices

    return set(supported_indices())


__all__ = ["open_index_scene", "split_list"]
