"""exactextract glue: WKB features in, plain rows out.

exactextract's GeoPandas source goes through GeoJSON text feature by feature (~10x slower);
:func:`wkb_source` hands it the fields' WKB as they are, and :func:`row_writer` collects each
feature's results as ``(k, {name: value})``, ``k`` the feature's position in the batch.
exactextract is imported with this module: :mod:`geoseg.fields.measure` imports it only when
it measures.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from exactextract._exactextract import Feature
from exactextract.feature import FeatureSource
from exactextract.writer import Writer


class WKBFeature(Feature):
    """A feature of WKB geometry, its position ``k`` in the batch and its results."""

    def __init__(self, k: int | None = None, wkb: bytes | None = None) -> None:
        Feature.__init__(self)
        self.k, self.wkb, self.props = k, wkb, {}

    def geometry(self) -> bytes | None:
        return self.wkb

    def set_geometry(self, wkb: bytes | None) -> None:
        self.wkb = wkb

    def set_geometry_format(self) -> str:
        return "wkb"

    def get(self, name: str) -> Any:
        return self.k if name == "k" else self.props[name]

    def set(self, name: str, value: Any) -> None:
        if name == "k":
            self.k = value
        else:
            self.props[name] = value

    def fields(self) -> list[str]:
        return ["k", *self.props]


class WKBSource(FeatureSource):
    """WKB geometries in one CRS as exactextract features, numbered by position."""

    def __init__(self, wkbs: np.ndarray, srs_wkt: str) -> None:
        super().__init__()
        self.wkbs, self.wkt = wkbs, srs_wkt

    def count(self) -> int:
        return len(self.wkbs)

    def __iter__(self) -> Iterator[Any]:
        for k, w in enumerate(self.wkbs):
            yield WKBFeature(k, w)

    def srs_wkt(self) -> str:
        return self.wkt


class RowWriter(Writer):
    """Collects each feature's results as ``(k, {name: value})``."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[int, dict[str, Any]]] = []

    def add_operation(self, op: Any) -> None:
        pass

    def write(self, feature: Any) -> None:
        f = WKBFeature()
        feature.copy_to(f)
        self.rows.append((int(f.k), f.props))

    def features(self) -> list[tuple[int, dict[str, Any]]]:
        return self.rows


def wkb_source(wkbs: np.ndarray, srs_wkt: str) -> WKBSource:
    """The geometries ``wkbs`` (WKB, in the CRS ``srs_wkt``) as an exactextract source."""
    return WKBSource(wkbs, srs_wkt)


def row_writer() -> RowWriter:
    """An exactextract writer keeping the results as rows."""
    return RowWriter()
