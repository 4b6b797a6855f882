"""Dataset layout builders, each on a tiny replica of the dataset's real file naming/formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rasterio.transform import from_origin

from geoseg.catalog.layouts import ISAID_CLASSES, ISPRS_CLASSES, LAYOUTS, build_catalog
from geoseg.catalog.loader import load_catalog
from geoseg.catalog.validate import validate_catalog
from geoseg.errors import ConfigError, InputError
from tests.support import invoke, write_geotiff

RNG = np.random.default_rng(0)
ISPRS_RGB = [tuple(int(c["color"][i:i + 2], 16) for i in (1, 3, 5)) for c in ISPRS_CLASSES]
ISAID_RGB = [tuple(int(c["color"][i:i + 2], 16) for i in (1, 3, 5)) for c in ISAID_CLASSES]


def raster(path: Path, data: np.ndarray, *, crs: str | None = None, res: float = 0.25,
           origin: tuple[float, float] = (0.0, 0.0), driver: str = "GTiff") -> Path:  # fmt: skip
    """Write a small raster in the dataset's format (GeoTIFF with CRS, or a plain PNG/JPEG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    geo = {"crs": crs, "transform": from_origin(*origin, res, res)} if crs else \
        {"crs": None, "transform": None}  # not georeferenced (rasterio's defaults)
    return write_geotiff(path, data if data.ndim == 3 else data[None], driver=driver, **geo)


def rgb(h: int = 32, w: int = 32) -> np.ndarray:
    return RNG.integers(0, 255, (3, h, w), dtype=np.uint8)


def colour_labels(palette: list[tuple[int, int, int]], h: int = 32, w: int = 32) -> np.ndarray:
    idx = RNG.integers(0, len(palette), (h, w))
    return np.array(palette, np.uint8)[idx].transpose(2, 0, 1)


def test_every_layout_is_registered() -> None:
    assert {"landcoverai", "gamus", "vaihingen", "potsdam", "isaid", "pattern"} <= set(LAYOUTS)


def test_landcoverai(tmp_path: Path) -> None:
    root = tmp_path / "landcover.ai"
    for i, sheet in enumerate(("M-33-20-D-c-4-2", "N-34-106-A-b-1-4")):
        origin = (600000.0 + 100 * i, 500000.0)
        raster(root / "images" / f"{sheet}.tif", rgb(), crs="EPSG:2180", origin=origin)
        if i == 0:
            raster(root / "masks" / f"{sheet}.tif",
                   RNG.integers(0, 5, (32, 32), dtype=np.uint8), crs="EPSG:2180", origin=origin)
    # the release's 512 px tiles and their lists: not georeferenced, not scenes
    raster(root / "output" / "M-33-20-D-c-4-2_0.jpg", rgb(), driver="JPEG")
    raster(root / "output" / "M-33-20-D-c-4-2_0_m.png", np.zeros((1, 32, 32), np.uint8),
           driver="PNG")  # fmt: skip
    (root / "train.txt").write_text("M-33-20-D-c-4-2_0\nM-33-20-D-c-4-2\n")
    res = build_catalog("landcoverai", root)
    cat = res.catalog
    assert [s.id for s in cat.scenes] == ["M-33-20-D-c-4-2", "N-34-106-A-b-1-4"]
    first = cat.scenes[0]
    assert first.labels is not None and first.labels.kind == "raster" and first.split == "train"
    assert first.modalities["image"].roles == ["red", "green", "blue"]
    assert cat.scenes[1].labels is None and any("no mask" in n for n in res.notes)
    assert [c.name for c in cat.classes] == ["background", "building", "woodland", "water", "road"]
    out = cat.to_yaml(tmp_path / "lc.yaml")
    check = validate_catalog(load_catalog(out))
    assert check.ok, check.problems


def test_gamus(tmp_path: Path) -> None:
    root = tmp_path / "GAMUS"
    for split, base in (("train", "JAX_004_"), ("train", "OMA_132_"), ("val", "JAX_017_")):
        raster(root / "images" / split / f"{base}IMG.png", rgb(), driver="PNG")
        h = RNG.random((1, 32, 32), dtype=np.float32) * 30
        raster(root / "heights" / split / f"{base}AGL.tif", h)
        raster(root / "classes" / split / f"{base}CLS.png",
               RNG.integers(0, 7, (1, 32, 32), dtype=np.uint8), driver="PNG")  # fmt: skip
    raster(root / "images" / "test" / "ATL_001_IMG.png", rgb(), driver="PNG")  # no height
    res = build_catalog("gamus", root)
    cat = res.catalog
    ids = {s.id: s for s in cat.scenes}
    assert set(ids) == {"JAX_004", "OMA_132", "JAX_017"}
    assert ids["JAX_017"].split == "val" and ids["JAX_004"].split == "train"
    assert set(ids["JAX_004"].modalities) == {"image", "height"}
    assert ids["JAX_004"].modalities["height"].roles == ["ndsm"]
    assert ids["OMA_132"].labels.path.endswith("classes/train/OMA_132_CLS.png")
    assert any("ATL_001_IMG.png" in n for n in res.notes)
    # GAMUS tiles carry no georeferencing: validation says so, one line per scene
    check = validate_catalog(cat)
    assert check.problems and all("no CRS" in p for p in check.problems)


def _isprs_tile(path: Path, bands: int, crs: str, origin: tuple[float, float],
                dtype: str = "uint8") -> None:  # fmt: skip
    data = RNG.integers(0, 255, (bands, 32, 32)).astype(dtype)
    raster(path, data, crs=crs, origin=origin, res=0.09)


def test_vaihingen(tmp_path: Path) -> None:
    root = tmp_path / "Vaihingen"
    for n, x in ((1, 496000.0), (2, 497000.0)):
        o = (x, 5420000.0)
        _isprs_tile(root / "top" / f"top_mosaic_09cm_area{n}.tif", 3, "EPSG:32632", o)
        _isprs_tile(root / "dsm" / f"dsm_09cm_matching_area{n}.tif", 1, "EPSG:32632", o,
                    "float32")  # fmt: skip
    o1 = (496000.0, 5420000.0)
    gt = root / "ISPRS_semantic_labeling_Vaihingen_ground_truth_COMPLETE"
    raster(gt / "top_mosaic_09cm_area1.tif", colour_labels(ISPRS_RGB), crs="EPSG:32632",
           origin=o1, res=0.09)  # fmt: skip
    ero = root / "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE"
    raster(ero / "top_mosaic_09cm_area1_noBoundary.tif", colour_labels(ISPRS_RGB),
           crs="EPSG:32632", origin=o1, res=0.09)  # fmt: skip
    cat = build_catalog("vaihingen", root).catalog
    a1, a2 = cat.scenes
    assert (a1.id, a1.split, a2.id, a2.split) == ("vaihingen_area1", "train",
                                                  "vaihingen_area2", "test")
    assert a1.modalities["image"].roles == ["nir", "red", "green"]
    assert set(a1.modalities) == {"image", "dsm"}
    assert a1.labels.encoding == "rgb" and "ground_truth_COMPLETE" in a1.labels.path
    assert a2.labels is None
    eroded = build_catalog("vaihingen", root, eroded=True).catalog
    assert eroded.scenes[0].labels.path.endswith("_noBoundary.tif")
    check = validate_catalog(cat)
    assert check.ok, check.problems
    # a label colour outside the ISPRS table is caught
    raster(gt / "top_mosaic_09cm_area1.tif", colour_labels([(1, 2, 3)]), crs="EPSG:32632",
           origin=o1, res=0.09)  # fmt: skip
    bad = validate_catalog(cat)
    assert any("label colours ['#010203']" in p for p in bad.problems)


def test_potsdam(tmp_path: Path) -> None:
    root = tmp_path / "Potsdam"
    for (r, c), x in (((2, 10), 366000.0), ((2, 13), 367000.0)):
        o = (x, 5808000.0)
        for prod, n in (("RGB", 3), ("IRRG", 3), ("RGBIR", 4)):
            folder = {"RGB": "2_Ortho_RGB", "IRRG": "3_Ortho_IRRG", "RGBIR": "4_Ortho_RGBIR"}[prod]
            _isprs_tile(root / folder / f"top_potsdam_{r}_{c}_{prod}.tif", n, "EPSG:32633", o)
        _isprs_tile(root / "1_DSM" / f"dsm_potsdam_{r:02d}_{c:02d}.tif", 1, "EPSG:32633", o,
                    "float32")  # fmt: skip
        raster(root / "1_DSM_normalisation" / f"dsm_potsdam_{r:02d}_{c:02d}_normalized_lastools"
               ".jpg", RNG.integers(0, 255, (1, 32, 32), dtype=np.uint8), driver="JPEG")
    raster(root / "5_Labels_all" / "top_potsdam_2_10_label.tif", colour_labels(ISPRS_RGB),
           crs="EPSG:32633", origin=(366000.0, 5808000.0), res=0.09)  # fmt: skip
    res = build_catalog("potsdam", root)
    cat = res.catalog
    tile, test = cat.scenes
    assert (tile.id, tile.split, test.id, test.split) == ("potsdam_2_10", "train",
                                                          "potsdam_2_13", "test")
    assert tile.modalities["image"].roles == ["red", "green", "blue", "nir"]  # RGBIR first
    assert tile.modalities["dsm"].path.endswith("dsm_potsdam_02_10.tif")
    assert "height" not in tile.modalities and any("not georeferenced" in n for n in res.notes)
    assert tile.labels.encoding == "rgb" and test.labels is None
    irrg = build_catalog("potsdam", root, product="IRRG").catalog
    assert irrg.scenes[0].modalities["image"].roles == ["nir", "red", "green"]
    assert validate_catalog(cat).ok
    with pytest.raises(ConfigError, match="product 'CIR'"):
        build_catalog("potsdam", root, product="CIR")


def test_isaid(tmp_path: Path) -> None:
    root = tmp_path / "iSAID"
    for split, names in (("train", ["P0000", "P0001"]), ("val", ["P0003"]), ("test", ["P0005"])):
        for n in names:
            raster(root / split / "images" / "images" / f"{n}.png", rgb(), driver="PNG")
            if split != "test":
                masks = root / split / "Semantic_masks" / "images"
                raster(masks / f"{n}_instance_color_RGB.png", colour_labels(ISAID_RGB),
                       driver="PNG")  # fmt: skip
                raster(masks / f"{n}_instance_id_RGB.png", rgb(), driver="PNG")
    # mmseg's patched copy of the same layout
    raster(root / "img_dir" / "train" / "P0000_0_896_0_896.png", rgb(), driver="PNG")
    raster(root / "ann_dir" / "train" / "P0000_0_896_0_896_instance_color_RGB.png",
           colour_labels(ISAID_RGB), driver="PNG")  # fmt: skip
    cat = build_catalog("isaid", root).catalog
    ids = {s.id: s for s in cat.scenes}
    assert set(ids) == {"P0000", "P0001", "P0003", "P0005", "P0000_0_896_0_896"}
    assert ids["P0003"].split == "val" and ids["P0005"].split == "test"
    assert ids["P0000"].labels.path.endswith("P0000_instance_color_RGB.png")
    assert ids["P0000"].labels.encoding == "rgb" and ids["P0005"].labels is None
    assert ids["P0000_0_896_0_896"].labels is not None
    assert len(cat.classes) == 16 and cat.classes[14].name == "plane"


def test_pattern(tmp_path: Path) -> None:
    root = tmp_path / "survey"
    for i, split in enumerate(("train", "train", "val")):
        o = (400000.0 + 10 * i, 6000000.0)
        raster(root / split / "ortho" / f"flight7_tile{i}_rgb.tif", rgb(), crs="EPSG:32630",
               origin=o)  # fmt: skip
        raster(root / split / "mask" / f"tile{i}_mask.tif",
               RNG.integers(0, 3, (1, 32, 32), dtype=np.uint8), crs="EPSG:32630", origin=o)
        if i != 1:
            raster(root / "dem" / f"tile{i}.tif", RNG.random((1, 32, 32), dtype=np.float32),
                   crs="EPSG:32630", origin=o)  # fmt: skip
    res = build_catalog("pattern", root, images="*/ortho/*_rgb.tif",
                        match=r"flight(?P<flight>\d+)_(?P<tile>tile\d+)_rgb",
                        labels="{split}/mask/{tile}_mask.tif", modalities={"dem": "dem/{tile}.tif"},
                        id="f{flight}-{tile}", roles=["red", "green", "blue"])  # fmt: skip
    cat = res.catalog
    assert [s.id for s in cat.scenes] == ["f7-tile0", "f7-tile2"]
    assert any("tile1" in n and "skipped" in n for n in res.notes)  # its DEM is missing
    s = cat.scenes[1]
    assert s.split == "val" and set(s.modalities) == {"image", "dem"}
    assert s.labels.path.endswith("val/mask/tile2_mask.tif")
    with pytest.raises(ConfigError, match="unknown placeholder"):
        build_catalog("pattern", root, images="*/ortho/*.tif", labels="{nope}.tif")
    with pytest.raises(InputError, match="no images matching"):
        build_catalog("pattern", root, images="*.jp2")


def test_build_cli(tmp_path: Path) -> None:
    root = tmp_path / "lc"
    raster(root / "images" / "M-33-48-A-c-4-4.tif", rgb(), crs="EPSG:2180")
    raster(root / "masks" / "M-33-48-A-c-4-4.tif", np.ones((1, 32, 32), np.uint8),
           crs="EPSG:2180")  # fmt: skip
    out = tmp_path / "cats" / "lc.yaml"
    code, stdout, _ = invoke("catalog", "build", "landcoverai", root, "-o", out)
    assert code == 0 and "1 scene(s), 1 with labels" in stdout
    # outside the catalog's folder: written absolute, so the catalog loads without
    # --allow-outside-paths (a relative ../ path would need it)
    assert f"path: {root}/images/M-33-48-A-c-4-4.tif" in out.read_text()
    code, _, _ = invoke("catalog", "validate", out)
    assert code == 0
    code, _, _ = invoke("catalog", "build", "landcoverai", root, "-o", tmp_path / "lc.json")
    assert code == 0 and load_catalog(tmp_path / "lc.json").scenes == load_catalog(out).scenes
    code, _, err = invoke("catalog", "build", "landcoverai", root, "-o", out, "--images", "*")
    assert code == 2 and "--images applies to the pattern layout only" in err
    code, _, err = invoke("catalog", "build", "nope", root, "-o", out)
    assert code == 2 and "unknown layout 'nope'" in err
    code, _, err = invoke("catalog", "build", "gamus", root, "-o", out)
    assert code == 2 and "no GAMUS tiles (images/<split>/*IMG.*) found" in err
    code, stdout, _ = invoke("catalog", "build", "pattern", root, "-o", tmp_path / "p.yaml",
                             "--images", "images/*.tif", "--labels", "masks/{name}")  # fmt: skip
    assert code == 0 and "1 with labels" in stdout
