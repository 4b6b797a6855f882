"""Which scenes and labels exist: the catalog spec (strict models), loading YAML/STAC through
one loader, dataset layouts (LandCover.ai, GAMUS, ISPRS, iSAID, patterns) and validation. May
import geometry, scene (Scene, class tables) and the foundation.

Modules, each importing only those before it: ``spec`` (the models) -> ``paths`` (href
resolution) -> ``stac`` (STAC to a spec) -> ``loader`` (``Catalog``, ``load_catalog``: YAML or
STAC) -> ``stac_export`` (a catalog as STAC), ``validate`` (files against the catalog),
``layouts`` (catalogs built from dataset folders).
"""

from geoseg.catalog.layouts import LAYOUTS, BuildResult, build_catalog
from geoseg.catalog.loader import Catalog, load_catalog, load_stac
from geoseg.catalog.paths import resolve_href
from geoseg.catalog.spec import CatalogScene, CatalogSpec, LabelSpec, ModalitySpec
from geoseg.catalog.stac_export import to_item_collection, write_stac
from geoseg.catalog.validate import CatalogCheck, format_table, validate_catalog

__all__ = ["LAYOUTS", "BuildResult", "Catalog", "CatalogCheck", "CatalogScene", "CatalogSpec",
           "LabelSpec", "ModalitySpec", "build_catalog", "format_table", "load_catalog", "load_stac",
           "resolve_href", "to_item_collection", "validate_catalog", "write_stac"]  # fmt: skip
