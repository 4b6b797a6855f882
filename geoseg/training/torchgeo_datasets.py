"""The torchgeo dataset classes a train step reads, and what geoseg knows of them.

``KNOWN``: the NonGeoDatasets (band roles, class table read from the dataset, ground
sampling); ``SENSOR_OF``: the GeoDataset classes whose band names follow a sensor table of
:mod:`geoseg.models.torchgeo_bands`. :func:`dataset_class` looks a name up in torchgeo and
:func:`construct` builds one, torchgeo's refusals turned into :class:`ConfigError`.
torchgeo is imported only when a class is looked up.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from geoseg.errors import ConfigError
from geoseg.scene.classes import PALETTE, ClassInfo


def _hex(rgb: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(v) for v in rgb[:3]))


def _table(names: Sequence[str], ids: Sequence[int], colours: Sequence[Sequence[int]] | None = None
           ) -> list[ClassInfo]:  # fmt: skip
    return [ClassInfo(id=i, name=str(n).lower().replace(" ", "_").replace("/", "_"),
                      color=_hex(colours[k]) if colours else PALETTE[k % len(PALETTE)])
            for k, (i, n) in enumerate(zip(ids, names, strict=True))]  # fmt: skip


def _landcoverai(ds: Any) -> list[ClassInfo]:
    cmap = ds.cmap
    return _table(ds.classes, range(len(ds.classes)), [cmap[i] for i in range(len(ds.classes))])


def _loveda(ds: Any) -> list[ClassInfo]:
    # mask 0 is no-data (ignored); 1..7 are background .. agriculture (torchgeo lists
    # 'no-data' last in its classes tuple)
    names = [c for c in ds.classes if c != "no-data"]
    return _table(names, range(1, len(names) + 1))


def _isprs(ds: Any) -> list[ClassInfo]:
    return _table(ds.classes, range(len(ds.classes)), ds.colormap)


def _ftw(ds: Any) -> list[ClassInfo]:
    if ds.target == "instance":
        raise ConfigError("FieldsOfTheWorld target 'instance' gives field ids, not classes; use "
                          "args: {target: 2-class} or {target: 3-class}")  # fmt: skip
    names = ["background", "field", "field_boundary"][: 2 if ds.target == "2-class" else 3]
    return _table(names, range(len(names)))  # value 3 (unlabelled) is ignored


@dataclass(frozen=True)
class Known:
    """What geoseg knows of a NonGeoDataset: band roles, class table, ground sampling."""

    roles: tuple[str, ...]
    classes: Callable[[Any], list[ClassInfo]]
    gsd: float


_FTW_ROLES = tuple(f"{b}_{w}" for w in ("b", "a") for b in ("red", "green", "blue", "nir"))
#: NonGeoDatasets a train step can read (FieldsOfTheWorld: window b then window a, 4 bands each)
KNOWN: dict[str, Known] = {
    "LandCoverAI": Known(("red", "green", "blue"), _landcoverai, 0.25),
    "LandCoverAI100": Known(("red", "green", "blue"), _landcoverai, 0.25),
    "LoveDA": Known(("red", "green", "blue"), _loveda, 0.3),
    "Vaihingen2D": Known(("nir", "red", "green"), _isprs, 0.09),
    "Potsdam2D": Known(("red", "green", "blue", "nir"), _isprs, 0.05),
    "FieldsOfTheWorld": Known(_FTW_ROLES, _ftw, 10.0),
}
#: GeoDataset classes whose band names follow a sensor table of geoseg.models.torchgeo_bands
SENSOR_OF = {"Sentinel2": "SENTINEL2", "Sentinel1": "SENTINEL1", "Landsat4TM": "LANDSAT_TM",
             "Landsat5TM": "LANDSAT_TM", "Landsat7": "LANDSAT_ETM", "Landsat8": "LANDSAT_OLI",
             "Landsat9": "LANDSAT_OLI", "NAIP": "NAIP"}  # fmt: skip


def dataset_class(name: str) -> Any:
    """The torchgeo dataset class ``name``: a NonGeoDataset of ``KNOWN`` or a RasterDataset."""
    import torchgeo.datasets as tgd

    cls = getattr(tgd, name, None)
    geo = isinstance(cls, type) and issubclass(cls, tgd.RasterDataset)
    if name in KNOWN or geo:
        return cls
    raise ConfigError(f"source.torchgeo {name!r}: geoseg trains on the NonGeoDatasets "
                      f"{sorted(KNOWN)} and on RasterDataset GeoDatasets (RasterDataset, "
                      "Sentinel2, NAIP, Landsat8...); use one of them")  # fmt: skip


def construct(cls: Any, kwargs: dict[str, Any], what: str) -> Any:
    """``cls(**kwargs)``; a missing dataset or refused arguments are a ConfigError on ``what``."""
    try:
        return cls(**kwargs)
    except FileNotFoundError as exc:  # torchgeo's DatasetNotFoundError
        raise ConfigError(f"{what}: {exc}".replace("use `download=True` to automatically",
                                                   "fetch and")) from None  # fmt: skip
    except (AssertionError, TypeError, ValueError) as exc:
        raise ConfigError(f"{what}: torchgeo refused the arguments {kwargs} ({exc or 'invalid'}); "
                          "check split and args") from None  # fmt: skip


def torchgeo_version() -> str:
    """``torchgeo <version>``, for a source's description."""
    from torchgeo import __version__

    return f"torchgeo {__version__}"
