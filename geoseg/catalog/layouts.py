"""Catalog builders for dataset folder layouts (``geoseg catalog build LAYOUT DIR``).

Each builder walks DIR, pairs the files of a scene by the dataset's own file naming, and
returns a Catalog (absolute paths; ``Catalog.to_yaml`` writes them relative to the YAML).
Layouts: LandCover.ai, GAMUS, ISPRS Vaihingen and Potsdam, iSAID, and a generic ``pattern``
mode (a glob for the images, templates for the matching labels and other modalities).
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geoseg._files import safe_name
from geoseg.catalog.loader import Catalog
from geoseg.catalog.spec import CatalogSpec
from geoseg.config import parse
from geoseg.errors import ConfigError, InputError


@dataclass
class BuildResult:
    """A built catalog and notes for the user (skipped files, missing partners)."""

    catalog: Catalog
    notes: list[str] = field(default_factory=list)


Builder = Callable[..., BuildResult]
LAYOUTS: dict[str, Builder] = {}


def layout(name: str) -> Callable[[Builder], Builder]:
    """Register a layout builder under ``name``."""

    def deco(fn: Builder) -> Builder:
        LAYOUTS[name] = fn
        return fn

    return deco


def build_catalog(name: str, root: str | Path, **options: Any) -> BuildResult:
    """Build a catalog of the dataset in ``root`` laid out as ``name``."""
    if name not in LAYOUTS:
        raise ConfigError(f"unknown layout {name!r}; use one of {sorted(LAYOUTS)}")
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder; give the dataset's root folder")
    return LAYOUTS[name](root.resolve(), **options)


def _catalog(name: str, classes: list[dict], scenes: list[dict], root: Path,
             notes: list[str], what: str) -> BuildResult:  # fmt: skip
    if not scenes:
        raise InputError(f"{root}: no {what} found; check the folder and the layout name "
                         "(see docs/catalogs.md)")  # fmt: skip
    seen: dict[str, int] = {}
    for s in scenes:  # ids must be unique: suffix repeats (same name in two splits)
        n = seen.get(s["id"], 0)
        seen[s["id"]] = n + 1
        if n:
            s["id"] = f"{s['id']}-{n + 1}"
    data = {"name": name, "classes": classes, "scenes": scenes}
    return BuildResult(Catalog(parse(CatalogSpec, data, root), None), notes)


def _split_of(path: Path, root: Path) -> str | None:
    """train/val/test from a folder name on the way from ``root`` to the file."""
    aliases = {"train": "train", "training": "train", "val": "val", "valid": "val",
               "validation": "val", "test": "test", "testing": "test"}  # fmt: skip
    try:
        parts = path.relative_to(root).parts[:-1]
    except ValueError:  # a glob that left DIR
        return None
    for part in parts:
        if part.lower() in aliases:
            return aliases[part.lower()]
    return None


def _walk(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


#: a file's kind: a name, or a function of the file and the match of its name
Kind = str | Callable[[Path, re.Match[str]], str]


def _scan(root: Path, table: Sequence[tuple[str, Kind]]) -> dict[str, Path]:
    """Files under ``root`` by ``kind:tile``: the first ``(regex, kind)`` matching a file's name
    (any case) gives the kind, its numeric groups the tile (``dsm_potsdam_02_10.tif``: ``dsm:2_10``)."""
    found: dict[str, Path] = {}
    for p in _walk(root):
        for regex, kind in table:
            if m := re.fullmatch(regex, p.name, re.I):
                tile = "_".join(str(int(g)) for g in m.groups() if g and g.isdigit())
                found[f"{kind if isinstance(kind, str) else kind(p, m)}:{tile}"] = p
                break
    return found


def _classes(rows: list[tuple[int, str, str]]) -> list[dict]:
    return [{"id": i, "name": n, "color": c} for i, n, c in rows]


# --------------------------------------------------------------------------- LandCover.ai

LANDCOVERAI_CLASSES = _classes([(0, "background", "#d9d9d9"), (1, "building", "#e31a1c"),
                                (2, "woodland", "#33a02c"), (3, "water", "#1f78b4"),
                                (4, "road", "#ff7f00")])  # fmt: skip


@layout("landcoverai")
def landcoverai(root: Path) -> BuildResult:
    """LandCover.ai: ``images/<sheet>.tif`` (RGB, EPSG:2180) + ``masks/<sheet>.tif`` (0-4).

    ``train.txt``/``val.txt``/``test.txt`` assign splits when their lines name whole images
    (the released lists name the 512 px tiles of ``output/``, which carry no georeferencing).
    """
    notes: list[str] = []
    splits: dict[str, str] = {}
    for split in ("train", "val", "test"):
        f = root / f"{split}.txt"
        if f.is_file():
            splits.update({ln.strip(): split for ln in f.read_text().splitlines() if ln.strip()})
    scenes = []
    for img in sorted((root / "images").glob("*.tif")):
        mask = root / "masks" / img.name
        scene: dict[str, Any] = {"id": safe_name(img.stem), "modalities": {
            "image": {"path": str(img), "roles": ["red", "green", "blue"]}}}  # fmt: skip
        if mask.is_file():
            scene["labels"] = {"path": str(mask), "kind": "raster"}
        else:
            notes.append(f"{img.name}: no mask {mask.relative_to(root)}; scene kept without labels")
        if img.stem in splits:
            scene["split"] = splits[img.stem]
        scenes.append(scene)
    return _catalog("landcoverai", LANDCOVERAI_CLASSES, scenes, root, notes,
                    "LandCover.ai images (images/*.tif)")  # fmt: skip


# --------------------------------------------------------------------------- GAMUS

GAMUS_CLASSES = _classes([(0, "background", "#000000"), (1, "ground", "#a6761d"),
                          (2, "vegetation", "#b2df8a"), (3, "building", "#e31a1c"), (4, "water", "#1f78b4"),
                          (5, "road", "#bdbdbd"), (6, "tree", "#33a02c")])  # fmt: skip


@layout("gamus")
def gamus(root: Path) -> BuildResult:
    """GAMUS: ``images/<split>/<base>IMG.*``, ``heights/<split>/<base>AGL.*`` (nDSM, m),
    ``classes/<split>/<base>CLS.*`` (ids 0-6)."""
    notes: list[str] = []
    scenes = []
    for img in sorted((root / "images").rglob("*IMG.*")):
        base = img.name[: img.name.rindex("IMG.")]
        rel = img.parent.relative_to(root / "images")
        height = _first(root / "heights" / rel, f"{base}AGL.*")
        label = _first(root / "classes" / rel, f"{base}CLS.*")
        if height is None:
            notes.append(f"{img.relative_to(root)}: no heights/{rel}/{base}AGL.*; skipped")
            continue
        scene: dict[str, Any] = {
            "id": safe_name(base), "split": _split_of(img, root),
            "modalities": {"image": {"path": str(img), "roles": ["red", "green", "blue"]},
                           "height": {"path": str(height), "roles": ["ndsm"]}}}  # fmt: skip
        if label is not None:
            scene["labels"] = {"path": str(label), "kind": "raster"}
        scenes.append(scene)
    return _catalog("gamus", GAMUS_CLASSES, scenes, root, notes,
                    "GAMUS tiles (images/<split>/*IMG.*)")  # fmt: skip


def _first(folder: Path, pattern: str) -> Path | None:
    hits = sorted(folder.glob(pattern)) if folder.is_dir() else []
    return hits[0] if hits else None


# --------------------------------------------------------------------------- ISPRS

#: ISPRS 2D semantic labelling: labels are RGB colours
ISPRS_CLASSES = _classes([(0, "impervious_surfaces", "#ffffff"), (1, "building", "#0000ff"),
                          (2, "low_vegetation", "#00ffff"), (3, "tree", "#00ff00"),
                          (4, "car", "#ffff00"), (5, "clutter", "#ff0000")])  # fmt: skip
#: tiles released with labels for training in the benchmark (the others were its test set)
VAIHINGEN_TRAIN = {1, 3, 5, 7, 11, 13, 15, 17, 21, 23, 26, 28, 30, 32, 34, 37}
POTSDAM_TRAIN = {"2_10", "2_11", "2_12", "3_10", "3_11", "3_12", "4_10", "4_11", "4_12", "5_10",
                 "5_11", "5_12", "6_10", "6_11", "6_12", "6_7", "6_8", "6_9", "7_10", "7_11",
                 "7_12", "7_7", "7_8", "7_9"}  # fmt: skip
POTSDAM_ROLES = {"RGBIR": ["red", "green", "blue", "nir"], "RGB": ["red", "green", "blue"],
                 "IRRG": ["nir", "red", "green"]}  # fmt: skip
#: file kinds (see _scan): a Vaihingen top is an image in top/, else full labels
VAIHINGEN_FILES: list[tuple[str, Kind]] = [
    (r"top_mosaic_09cm_area(\d+)\.tif", lambda p, m: "top" if p.parent.name.lower() == "top" else "full"),
    (r"top_mosaic_09cm_area(\d+)_noBoundary\.tif", "eroded"),
    (r"dsm_09cm_matching_area(\d+)\.tif", "dsm"),
    (r"ndsm_09cm_matching_area(\d+)\.\w+", "ndsm"),
]
#: a Potsdam top's kind is its product: RGBIR, RGB or IRRG
POTSDAM_FILES: list[tuple[str, Kind]] = [
    (r"top_potsdam_(\d+)_(\d+)_(RGBIR|RGB|IRRG)\.tif", lambda p, m: m[3].upper()),
    (r"top_potsdam_(\d+)_(\d+)_label\.tif", "full"),
    (r"top_potsdam_(\d+)_(\d+)_label_noBoundary\.tif", "eroded"),
    (r"dsm_potsdam_(\d+)_(\d+)\.tif", "dsm"),
    (r"dsm_potsdam_(\d+)_(\d+)_normalized_\w+\.\w+", "ndsm"),
]


def _isprs_scene(sid: str, key: str, image: dict[str, Any], found: dict[str, Path],
                 height: Path | None, split: str, eroded: bool) -> dict[str, Any]:  # fmt: skip
    """An ISPRS scene: the image, the tile's DSM and nDSM when found, RGB-coded labels (the
    full ones, or the eroded noBoundary ones when asked or when they are all there is)."""
    mods: dict[str, Any] = {"image": image}
    if f"dsm:{key}" in found:
        mods["dsm"] = {"path": str(found[f"dsm:{key}"]), "roles": ["dsm"]}
    if height is not None:
        mods["height"] = {"path": str(height), "roles": ["ndsm"]}
    scene: dict[str, Any] = {"id": sid, "modalities": mods, "split": split}
    full, ero = found.get(f"full:{key}"), found.get(f"eroded:{key}")
    lab = (ero or full) if eroded else (full or ero)
    if lab is not None:
        scene["labels"] = {"path": str(lab), "kind": "raster", "encoding": "rgb"}
    return scene


@layout("vaihingen")
def vaihingen(root: Path, eroded: bool = False) -> BuildResult:
    """ISPRS Vaihingen: ``top/top_mosaic_09cm_area<N>.tif`` (IRRG), ``dsm/dsm_09cm_matching_
    area<N>.tif``, optional ``ndsm/ndsm_09cm_matching_area<N>.*``, labels
    ``top_mosaic_09cm_area<N>.tif`` in a ground-truth folder (``*_noBoundary.tif`` eroded)."""
    found = _scan(root, VAIHINGEN_FILES)
    notes: list[str] = []
    scenes = []
    for n in sorted(int(k.split(":")[1]) for k in found if k.startswith("top:")):
        if f"dsm:{n}" not in found:
            notes.append(f"area{n}: no dsm_09cm_matching_area{n}.tif")
        image = {"path": str(found[f"top:{n}"]), "roles": ["nir", "red", "green"]}
        split = "train" if n in VAIHINGEN_TRAIN else "test"
        scenes.append(_isprs_scene(f"vaihingen_area{n}", str(n), image, found,
                                   found.get(f"ndsm:{n}"), split, eroded))  # fmt: skip
    return _catalog("vaihingen", ISPRS_CLASSES, scenes, root, notes,
                    "Vaihingen tops (top/top_mosaic_09cm_area<N>.tif)")  # fmt: skip


@layout("potsdam")
def potsdam(root: Path, product: str | None = None, eroded: bool = False) -> BuildResult:
    """ISPRS Potsdam: ``top_potsdam_<r>_<c>_{RGBIR,RGB,IRRG}.tif``, ``dsm_potsdam_<rr>_<cc>.tif``
    (zero-padded), ``dsm_potsdam_<rr>_<cc>_normalized_lastools.jpg`` (nDSM), labels
    ``top_potsdam_<r>_<c>_label.tif`` (``_label_noBoundary.tif`` eroded)."""
    found = _scan(root, POTSDAM_FILES)
    if product is not None and product.upper() not in POTSDAM_ROLES:
        raise ConfigError(f"Potsdam product {product!r}: use one of {list(POTSDAM_ROLES)}")
    tiles = {k.split(":")[1] for k in found if k.split(":")[0] in POTSDAM_ROLES}
    notes: list[str] = []
    scenes = []
    for key in sorted(tiles, key=lambda k: tuple(int(v) for v in k.split("_"))):
        prod = product.upper() if product else next(p for p in POTSDAM_ROLES if f"{p}:{key}" in found)
        if f"{prod}:{key}" not in found:
            notes.append(f"tile {key}: no {prod} image; skipped")
            continue
        image = {"path": str(found[f"{prod}:{key}"]), "roles": POTSDAM_ROLES[prod]}
        split = "train" if key in POTSDAM_TRAIN else "test"
        scenes.append(_isprs_scene(f"potsdam_{key}", key, image, found,
                                   _potsdam_height(found.get(f"ndsm:{key}"), notes), split, eroded))
    return _catalog("potsdam", ISPRS_CLASSES, scenes, root, notes,
                    "Potsdam tops (top_potsdam_<r>_<c>_RGB.tif...)")  # fmt: skip


def _potsdam_height(ndsm: Path | None, notes: list[str]) -> Path | None:
    """The nDSM if a GeoTIFF; the released ones are JPEGs without georeferencing: noted."""
    if ndsm is not None and ndsm.suffix.lower() not in (".tif", ".tiff"):
        notes.append(f"{ndsm.name}: not georeferenced; nDSM not added (convert it to a "
                     f"GeoTIFF on the DSM's grid and build again)")
        return None
    return ndsm


# --------------------------------------------------------------------------- iSAID

ISAID_CLASSES = _classes([
    (0, "background", "#000000"), (1, "ship", "#00003f"), (2, "storage_tank", "#003f3f"),
    (3, "baseball_diamond", "#003f00"), (4, "tennis_court", "#003f7f"), (5, "basketball_court", "#003fbf"),
    (6, "ground_track_field", "#003fff"), (7, "bridge", "#007f3f"), (8, "large_vehicle", "#007f7f"),
    (9, "small_vehicle", "#00007f"), (10, "helicopter", "#0000bf"), (11, "swimming_pool", "#0000ff"),
    (12, "roundabout", "#00bf7f"), (13, "soccer_ball_field", "#007fbf"), (14, "plane", "#007fff"),
    (15, "harbor", "#00649b")])  # fmt: skip
ISAID_MASK = re.compile(r"^(?P<stem>.+)_instance_color_RGB\.png$", re.I)


@layout("isaid")
def isaid(root: Path) -> BuildResult:
    """iSAID: ``<split>/images/P0000.png`` + ``P0000_instance_color_RGB.png`` semantic masks
    (RGB colours; also the patched ``P0000_<y0>_<y1>_<x0>_<x1>`` names of mmseg's converter)."""
    masks: dict[tuple[str | None, str], Path] = {}
    images: list[Path] = []
    for p in _walk(root):
        if p.suffix.lower() != ".png":
            continue
        if m := ISAID_MASK.match(p.name):
            masks[(_split_of(p, root), m["stem"])] = p
        elif not re.search(r"_instance_id_RGB$", p.stem, re.I):
            images.append(p)
    notes: list[str] = []
    scenes = []
    for img in images:
        split = _split_of(img, root)
        scene: dict[str, Any] = {"id": safe_name(img.stem), "split": split, "modalities": {
            "image": {"path": str(img), "roles": ["red", "green", "blue"]}}}  # fmt: skip
        mask = masks.get((split, img.stem))
        if mask is not None:
            scene["labels"] = {"path": str(mask), "kind": "raster", "encoding": "rgb"}
        elif split != "test":
            notes.append(f"{img.relative_to(root)}: no {img.stem}_instance_color_RGB.png")
        scenes.append(scene)
    return _catalog("isaid", ISAID_CLASSES, scenes, root, notes, "iSAID images (P*.png)")


# --------------------------------------------------------------------------- generic pattern


@layout("pattern")
def pattern(root: Path, images: str = "**/*.tif", labels: str | None = None,
            modalities: Mapping[str, str] | None = None, id: str = "{stem}",
            match: str | None = None, image_name: str = "image",
            roles: list[str] | None = None,
            classes: list[dict] | None = None) -> BuildResult:  # fmt: skip
    """Any layout: ``images`` is a glob under DIR; ``labels`` and each of ``modalities`` are
    path templates (relative to DIR) filled per image from {stem}, {name}, {dir}, {ext},
    {split} and the named groups of the ``match`` regex (applied to the image's file name).
    Images whose name does not match, or whose templated files are missing, are skipped."""
    regex = re.compile(match) if match else None
    notes: list[str] = []
    scenes = []
    hits = sorted(Path(p) for p in glob.glob(str(root / images), recursive=True))
    for img in (p for p in hits if p.is_file()):
        fields = _pattern_fields(img, root, regex, notes)
        if fields is None:
            continue
        image: dict[str, Any] = {"path": str(img), **({"roles": roles} if roles else {})}
        mods = _templated_modalities(img, root, fields, modalities or {}, notes)
        if mods is None:
            continue
        scene: dict[str, Any] = {"id": safe_name(_fill(id, fields, "--id")),
                                 "modalities": {image_name: image, **mods},
                                 "split": fields["split"] or None}  # fmt: skip
        if labels:
            lab = root / _fill(labels, fields, "--labels")
            if lab.is_file():
                scene["labels"] = {"path": str(lab)}
            else:
                notes.append(f"{img.relative_to(root)}: no labels {lab.relative_to(root)}")
        scenes.append(scene)
    return _catalog(root.name, classes or [], scenes, root, notes,
                    f"images matching {images!r}")  # fmt: skip


def _pattern_fields(img: Path, root: Path, regex: re.Pattern[str] | None,
                    notes: list[str]) -> dict[str, Any] | None:  # fmt: skip
    """Template fields of an image, or None (noted) when its name does not match ``regex``."""
    fields: dict[str, Any] = {"stem": img.stem, "name": img.name, "ext": img.suffix,
                              "dir": os.path.relpath(img.parent, root),
                              "split": _split_of(img, root) or ""}  # fmt: skip
    if regex is None:
        return fields
    m = regex.search(img.name)
    if m is None:
        notes.append(f"{img.relative_to(root)}: name does not match {regex.pattern!r}; skipped")
        return None
    return fields | {k: v for k, v in m.groupdict().items() if v is not None}


def _templated_modalities(img: Path, root: Path, fields: Mapping[str, Any],
                          templates: Mapping[str, str],
                          notes: list[str]) -> dict[str, Any] | None:  # fmt: skip
    """The other modalities of an image, or None (noted) when one of their files is missing."""
    mods: dict[str, Any] = {}
    for name, tpl in templates.items():
        path = root / _fill(tpl, fields, "--modality")
        if not path.is_file():
            notes.append(f"{img.relative_to(root)}: no {path.relative_to(root)}; skipped")
            return None
        mods[name] = {"path": str(path)}
    return mods


def _fill(template: str, fields: Mapping[str, Any], option: str) -> str:
    try:
        return template.format(**fields)
    except (KeyError, IndexError) as exc:
        raise ConfigError(f"{option} {template!r}: unknown placeholder {exc}; use "
                          f"{', '.join('{' + k + '}' for k in fields)}") from None
