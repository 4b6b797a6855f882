"""Tile store: finished chunks persisted at once (Zarr), so a killed run resumes where it was."""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from geoseg._files import atomic_write_text
from geoseg.config import NODATA
from geoseg.errors import OutputError
from geoseg.geometry.window import BlockReader, PixelWindow


class TileStore:
    """Zarr arrays ``classes``, ``confidence`` (and ``probabilities``) plus per-chunk markers.

    A chunk's marker (``done/i_j.json``, holding its class counts) is written only after its
    data, so a chunk interrupted half-way is simply recomputed on resume.
    """

    def __init__(self, root: Path):
        self.root = Path(root)

    @classmethod
    def create(
        cls, root: Path, shape: tuple[int, int], chunk: int, num_classes: int,
        probabilities: bool, manifest: dict[str, Any],
    ) -> TileStore:  # fmt: skip
        root = Path(root)
        try:
            root.mkdir(parents=True, exist_ok=True)
            (root / "done").mkdir(exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{root}: cannot create the tile store ({exc.strerror}); "
                              "choose a writable --tiles folder") from None
        group = zarr.open_group(str(root / "store.zarr"), mode="a")
        c = (min(chunk, shape[0]), min(chunk, shape[1]))
        for name in ("classes", "confidence"):
            if name not in group:
                group.create_array(name, shape=shape, chunks=c, dtype="uint8", fill_value=NODATA)
        if probabilities and "probabilities" not in group:
            group.create_array("probabilities", shape=(num_classes, *shape),
                               chunks=(num_classes, *c), dtype="uint8", fill_value=NODATA)
        atomic_write_text(root / "manifest.json", json.dumps(manifest, indent=2))
        return cls(root)

    def manifest(self) -> dict[str, Any] | None:
        path = self.root / "manifest.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def _group(self, mode: str = "r+"):
        return zarr.open_group(str(self.root / "store.zarr"), mode=mode)

    def _marker(self, index: tuple[int, int]) -> Path:
        return self.root / "done" / f"{index[0]}_{index[1]}.json"

    def is_done(self, index: tuple[int, int]) -> bool:
        return self._marker(index).is_file()

    def done_stats(self) -> dict[tuple[int, int], dict[str, Any]]:
        out = {}
        for p in (self.root / "done").glob("*.json"):
            i, j = p.stem.split("_")
            out[(int(i), int(j))] = json.loads(p.read_text())
        return out

    def write_chunk(
        self, index: tuple[int, int], core: PixelWindow,
        classes: np.ndarray, confidence: np.ndarray, probabilities: np.ndarray | None,
        stats: dict[str, Any],
    ) -> None:  # fmt: skip
        """Store a finished chunk's arrays at ``core``, then its done marker."""
        g = self._group()
        g["classes"][core.slices] = classes
        g["confidence"][core.slices] = confidence
        if probabilities is not None:
            g["probabilities"][(slice(None), *core.slices)] = probabilities
        atomic_write_text(self._marker(index), json.dumps(stats))

    def reader(self, name: str) -> BlockReader:
        """A block reader ``f(window) -> (bands, h, w) array`` over one stored array."""
        arr = self._group("r")[name]

        def read(window: PixelWindow) -> np.ndarray:
            if arr.ndim == 3:
                return arr[(slice(None), *window.slices)]
            return arr[window.slices][None]

        return read

    def put_handover(self, src: tuple[int, int], dst: tuple[int, int],
                     part: np.ndarray, valid: np.ndarray) -> Path:  # fmt: skip
        """Spill the blend sums chunk ``src`` hands to chunk ``dst`` in a later chunk row.

        Row-major order keeps such a hand-over waiting for a whole chunk row: in memory these
        would grow with the scene's width (measured +130 MB from 4096 to 16384 px wide).
        Written under a temporary name and renamed: a recomputed ``accumulate`` (its worker
        died) may rewrite the file while a ``finish`` reads it.
        """
        folder = self.root / "handover"
        folder.mkdir(exist_ok=True)
        path = folder / f"{src[0]}_{src[1]}-{dst[0]}_{dst[1]}.npy"
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
        with open(tmp, "wb") as fh:
            np.save(fh, part)
            np.save(fh, valid)
        os.replace(tmp, path)
        return path

    @staticmethod
    def read_handover(path: Path) -> tuple[np.ndarray, np.ndarray]:
        """The ``(part, valid)`` arrays spilled at ``path``.

        The file stays until its chunk is stored (``drop_handovers``): Dask retries a
        ``finish`` whose worker died, and the retry must find its inputs again.
        """
        with open(path, "rb") as fh:
            return np.load(fh), np.load(fh)

    @staticmethod
    def drop_handovers(paths: Iterable[Path]) -> None:
        """Delete hand-overs whose receiving chunk is stored."""
        for path in paths:
            path.unlink(missing_ok=True)

    def stored_stats(self, index: tuple[int, int]) -> dict[str, Any]:
        """The statistics stored with a finished chunk."""
        return json.loads(self._marker(index).read_text())

    def clear_handovers(self) -> None:
        """Forget hand-overs no pending chunk will read (an interrupted run's are recomputed)."""
        shutil.rmtree(self.root / "handover", ignore_errors=True)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
