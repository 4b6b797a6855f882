"""Band names of torchgeo's sensor weights and datasets as band roles.

Roles are STAC ``eo:common_name`` values (``red``, ``nir08``, ``swir16``...: what catalogs and
STAC items carry). A weight's or dataset's sensor band names (``SR_B3``, ``B8A``) become roles
through the table of its sensor (Landsat band numbers differ between TM, ETM+ and OLI); other
spellings of a role in scenes are resolved by :func:`canonical_role`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from geoseg.errors import ModelError

_S2 = {"B1": "coastal", "B2": "blue", "B3": "green", "B4": "red", "B5": "rededge071",
       "B6": "rededge075", "B7": "rededge078", "B8": "nir", "B8A": "nir08", "B9": "nir09",
       "B10": "cirrus", "B11": "swir16", "B12": "swir22", "NDVI": "ndvi"}  # fmt: skip
_TM = {"B1": "blue", "B2": "green", "B3": "red", "B4": "nir", "B5": "swir16", "B6": "lwir",
       "B7": "swir22"}  # fmt: skip
_ETM = {**_TM, "B6_VCID_1": "lwir_low_gain", "B6_VCID_2": "lwir_high_gain", "B8": "pan"}
_OLI = {"B1": "coastal", "B2": "blue", "B3": "green", "B4": "red", "B5": "nir", "B6": "swir16",
        "B7": "swir22", "B8": "pan", "B9": "cirrus", "B10": "lwir11", "B11": "lwir12"}  # fmt: skip
_S1 = {"VV": "vv", "VH": "vh"}
#: enum member prefix -> band table (Landsat band numbers differ between sensors)
SENSORS = (("LANDSAT_TM", _TM), ("LANDSAT_ETM", _ETM), ("LANDSAT_OLI", _OLI),
           ("SENTINEL2", _S2), ("SENTINEL1", _S1))  # fmt: skip
#: other spellings of roles accepted in scenes (catalog ``roles:``, band descriptions, --roles)
ROLE_ALIASES = {
    "r": "red", "g": "green", "b": "blue", "ir": "nir", "nir1": "nir",
    "swir1": "swir16", "swir2": "swir22", "rededge1": "rededge071", "rededge2": "rededge075",
    "rededge3": "rededge078", "rededge4": "nir08", "nir_narrow": "nir08", "narrow_nir": "nir08",
    "water_vapour": "nir09", "water_vapor": "nir09", "aerosol": "coastal",
    "coastal_aerosol": "coastal", "panchromatic": "pan", "thermal": "lwir", "tir": "lwir",
}  # fmt: skip


def canonical_role(role: str) -> str:
    """A band role in its canonical spelling (lower case, aliases resolved)."""
    key = str(role).strip().lower().replace("-", "_").replace(" ", "_")
    return ROLE_ALIASES.get(key, key)


def _sensor_key(band: str) -> str:
    b = band.upper().removeprefix("SR_")
    return re.sub(r"^B0(\d)", r"B\1", b)


def band_roles(member: str, bands: Sequence[str], in_chans: int, name: str = "") -> tuple[str, ...]:
    """Roles of a weight's bands, from the sensor its enum member names (Landsat band numbers
    differ between TM, ETM+ and OLI); weights without band names (fMoW RGB) are red, green, blue."""
    if not bands:
        if in_chans == 3:
            return ("red", "green", "blue")
        raise ModelError(f"encoder_weights {name or member!r}: torchgeo gives no band names for "
                         f"this {in_chans}-band weight; geoseg cannot map it to band roles")
    table = next((t for prefix, t in SENSORS if member.startswith(prefix)), None)
    if table is None:  # RGB products named by colour (Satlas R/G/B, NAIP)
        table = {"R": "red", "G": "green", "B": "blue", "NIR": "nir", "IR": "nir"}
    roles = []
    for band in bands:
        role = table.get(_sensor_key(band))
        if role is None:
            raise ModelError(f"encoder_weights {name or member!r}: band {band!r} has no known "
                             "role; geoseg cannot map this weight's bands")  # fmt: skip
        roles.append(role)
    return tuple(roles)
