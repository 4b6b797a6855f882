"""Tile store: finished chunks persisted at once (Zarr), so a killed run resumes where it was.

Every stored chunk is checked before a resumed run trusts it: its done marker holds the CRC-32
of each array as written, and :meth:`TileStore.verify` reads the chunks back and compares
(a truncated or corrupt chunk file is recomputed, not trusted). The blend sums a chunk's
tiles hand to its neighbours, and the probabilities of tiles whose chunk has not handed them
on yet, are spilled here with a CRC-32 too (``geoseg.store.spill``) and outlive a killed run:
a resumed run reuses the intact ones, so it runs only the tiles in flight at the kill.
One run at a time per store: :meth:`TileStore.lock` (``geoseg.store.lock``).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from geoseg._files import atomic_write_text, space_problem, write_errno
from geoseg.config import NODATA
from geoseg.errors import OutputError
from geoseg.geometry.window import BlockReader, PixelWindow
from geoseg.store.lock import RunLock, store_lock
from geoseg.store.spill import crc32, load_checked, save_checked

log = logging.getLogger(__name__)

#: arrays of a chunk, in the order their checksums are listed
ARRAYS = ("classes", "confidence", "probabilities")

#: a hand-over's source and receiving chunk, and where spilled hand-overs are found
Link = tuple[tuple[int, int], tuple[int, int]]
Handovers = dict[Link, Path]


class TileStore:
    """Zarr arrays ``classes``, ``confidence`` (and ``probabilities``) plus per-chunk markers.

    A chunk's marker (``done/i_j.json``, holding its class counts, its window and the CRC-32
    of its arrays) is written only after its data, so a chunk interrupted half-way is simply
    recomputed on resume, and one damaged later is found by :meth:`verify`.
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
        try:
            cls._create_arrays(root, shape, chunk, num_classes, probabilities)
        except OutputError:
            raise
        except Exception as exc:
            if write_errno(exc) is not None:
                raise cls(root)._failed(exc) from exc
            log.warning("%s: the tile store is damaged (%s); starting it afresh", root,
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            for part in ("store.zarr", "done", "handover", "tile"):
                shutil.rmtree(root / part, ignore_errors=True)
            (root / "done").mkdir(exist_ok=True)
            cls._create_arrays(root, shape, chunk, num_classes, probabilities)
        try:
            atomic_write_text(root / "manifest.json", json.dumps(manifest, indent=2))
        except OSError as exc:
            raise cls(root)._failed(exc) from exc
        return cls(root)

    @staticmethod
    def _create_arrays(root: Path, shape: tuple[int, int], chunk: int, num_classes: int,
                       probabilities: bool) -> None:  # fmt: skip
        group = zarr.open_group(str(root / "store.zarr"), mode="a")
        c = (min(chunk, shape[0]), min(chunk, shape[1]))
        want = {"classes": (shape, c), "confidence": (shape, c)}
        if probabilities:
            want["probabilities"] = ((num_classes, *shape), (num_classes, *c))
        for name, (full, chunks) in want.items():
            if name in group:
                arr = group[name]
                if tuple(arr.shape) != full or tuple(arr.chunks) != chunks:
                    raise ValueError(f"array {name} has shape {arr.shape}, expected {full}")
            else:
                group.create_array(name, shape=full, chunks=chunks, dtype="uint8",
                                   fill_value=NODATA)  # fmt: skip

    def lock(self, *, wait: bool = False, timeout: float | None = None) -> RunLock:
        """The lock of this store's run: ``<tiles>/<run id>.lock`` beside the store (so removing
        the store never removes a lock held on it)."""
        return store_lock(self.root, wait=wait, timeout=timeout)

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
        """The statistics of every chunk with a done marker (not verified: see ``verify``)."""
        return {index: _stats(json.loads(p.read_text())) for index, p in self._markers()}

    def _markers(self) -> list[tuple[tuple[int, int], Path]]:
        """``((i, j), path)`` of the done markers (not the temporaries of a killed writer)."""
        out = []
        for p in sorted((self.root / "done").glob("*_*.json")):
            i, _, j = p.stem.partition("_")
            if i.isdigit() and j.isdigit():
                out.append(((int(i), int(j)), p))
        return out

    def verify(self) -> tuple[dict[tuple[int, int], dict[str, Any]], list[tuple[int, int]]]:
        """Check every stored chunk against the CRC-32 in its marker before it is trusted.

        A chunk whose file is truncated, corrupt or missing, or whose marker is damaged or
        predates checksums, loses its marker (it will be recomputed). Reads every stored
        chunk once (measured: docs/benchmarks.md, "Tile store verification").

        Returns:
            The statistics of the good chunks, and the indices of the bad ones.
        """
        good: dict[tuple[int, int], dict[str, Any]] = {}
        bad: list[tuple[int, int]] = []
        group = None
        for p in (self.root / "done").glob(".*"):  # a marker's writer killed before its rename
            p.unlink(missing_ok=True)
        for (i, j), p in self._markers():
            try:
                marker = json.loads(p.read_text())
                group = group if group is not None else self._group("r")
                ok = self._matches(group, marker["check"])
            except Exception:
                ok = False
            if ok:
                good[(i, j)] = _stats(marker)
            else:
                bad.append((i, j))
                p.unlink(missing_ok=True)
        if bad:
            log.warning("%s: %d stored chunk(s) damaged (truncated or corrupt): %s; "
                        "recomputing them", self.root, len(bad),
                        ", ".join(f"{i}_{j}" for i, j in bad[:10]))  # fmt: skip
        return good, bad

    @staticmethod
    def _matches(group: Any, check: dict[str, Any]) -> bool:
        window = PixelWindow(*check["window"])
        for name, want in check["crc32"].items():
            arr = group[name]
            data = arr[(slice(None), *window.slices)] if arr.ndim == 3 else arr[window.slices]
            if crc32(data) != want:
                return False
        return True

    def write_chunk(
        self, index: tuple[int, int], core: PixelWindow,
        classes: np.ndarray, confidence: np.ndarray, probabilities: np.ndarray | None,
        stats: dict[str, Any],
    ) -> None:  # fmt: skip
        """Store a finished chunk's arrays at ``core``, then its done marker (with checksums).

        Raises:
            OutputError: the store cannot be written (disk full...); the chunk has no marker,
                so a re-run recomputes it.
        """
        arrays = {"classes": classes, "confidence": confidence, "probabilities": probabilities}
        try:
            g = self._group()
            g["classes"][core.slices] = classes
            g["confidence"][core.slices] = confidence
            if probabilities is not None:
                g["probabilities"][(slice(None), *core.slices)] = probabilities
            check = {"window": core.as_list(),
                     "crc32": {n: crc32(a) for n, a in arrays.items() if a is not None}}
            atomic_write_text(self._marker(index), json.dumps({**stats, "check": check}))
        except OSError as exc:
            raise self._failed(exc) from exc

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
        """Spill the blend sums chunk ``src`` hands to a neighbouring chunk ``dst``.

        Spilled, not kept in memory: hand-overs to the next chunk row wait for a whole row
        (in memory they would grow with the scene's width: measured +130 MB from 4096 to
        16384 px wide), and a spilled piece outlives a killed run, so a resumed run reuses it
        instead of running its tiles again (:meth:`stored_handovers`). Written under a
        temporary name and renamed: a recomputed ``accumulate`` (its worker died) may rewrite
        the file while a ``finish`` reads it. The CRC-32 of both arrays follows them.
        """
        path = self._handover_path(src, dst)
        try:
            path.parent.mkdir(exist_ok=True)
            save_checked(path, part, valid)
        except OSError as exc:
            raise self._failed(exc) from exc
        return path

    @staticmethod
    def read_handover(path: Path) -> tuple[np.ndarray, np.ndarray]:
        """The ``(part, valid)`` arrays spilled at ``path``, checked against their CRC-32.

        The file stays until its chunk is stored (``drop_handovers``): Dask retries a
        ``finish`` whose worker died, and the retry must find its inputs again.

        Raises:
            OutputError: the file is missing, truncated or corrupt (a re-run recomputes it).
        """
        arrays, detail = load_checked(path, 2)
        if arrays is None:
            raise OutputError(f"{path}: a hand-over of the tile store is damaged ({detail}); "
                              "run the same command again: it resumes from the stored chunks "
                              "and recomputes the hand-over")  # fmt: skip
        part, valid = arrays
        return part, valid

    @staticmethod
    def drop_handovers(paths: Iterable[Path]) -> None:
        """Delete hand-overs whose receiving chunk is stored."""
        for path in paths:
            path.unlink(missing_ok=True)

    def stored_stats(self, index: tuple[int, int]) -> dict[str, Any]:
        """The statistics stored with a finished chunk."""
        return _stats(json.loads(self._marker(index).read_text()))

    def clear_spills(self) -> None:
        """Forget every hand-over and spilled tile (once all chunks are stored, none is read
        again)."""
        shutil.rmtree(self.root / "handover", ignore_errors=True)
        shutil.rmtree(self.root / "tile", ignore_errors=True)

    def put_tile(self, origin: tuple[int, int], probs: np.ndarray) -> None:
        """Spill the class probabilities of the tile at ``origin`` (row, col) until its chunk's
        pieces are stored: a kill in between loses no finished tile."""
        path = self._tile_path(origin)
        try:
            path.parent.mkdir(exist_ok=True)
            save_checked(path, probs)
        except OSError as exc:
            raise self._failed(exc) from exc

    def stored_tile(self, origin: tuple[int, int],
                    shape: tuple[int, ...]) -> tuple[np.ndarray | None, bool]:  # fmt: skip
        """A spilled tile's probabilities (None: not spilled), and whether a spilled one was
        found damaged (truncated, corrupt, of another shape: removed, to be run again)."""
        path = self._tile_path(origin)
        if not path.is_file():
            return None, False
        arrays, detail = load_checked(path, 1)
        if arrays is not None and arrays[0].shape != shape:
            arrays, detail = None, f"shape {arrays[0].shape}, expected {shape}"
        if arrays is None:
            log.warning("%s: a spilled tile is damaged (%s); running it again", path, detail)
            path.unlink(missing_ok=True)
            return None, True
        return arrays[0], False

    def drop_tiles(self, origins: Iterable[tuple[int, int]]) -> None:
        """Delete spilled tiles whose contributions are stored (as pieces or chunks)."""
        for origin in origins:
            self._tile_path(origin).unlink(missing_ok=True)

    def stored_tiles(self, keep: Collection[tuple[int, int]]) -> set[tuple[int, int]]:
        """Origins of the spilled tiles in ``keep`` (checked when read: ``stored_tile``);
        the rest, and temporaries of a killed writer, are removed."""
        folder, wanted, found = self.root / "tile", set(keep), set()
        for p in folder.glob(".*"):
            p.unlink(missing_ok=True)
        for p in folder.glob("*.npy"):
            r, _, c = p.stem.partition("_")
            origin = (int(r), int(c)) if r.isdigit() and c.isdigit() else None
            if origin in wanted:
                found.add(origin)
            else:
                p.unlink(missing_ok=True)
        return found

    def _tile_path(self, origin: tuple[int, int]) -> Path:
        return self.root / "tile" / f"{origin[0]}_{origin[1]}.npy"

    def _handover_path(self, src: tuple[int, int], dst: tuple[int, int]) -> Path:
        return self.root / "handover" / f"{src[0]}_{src[1]}-{dst[0]}_{dst[1]}.npy"

    def stored_handovers(self, pending: Collection[tuple[int, int]]) -> tuple[Handovers, list[Link]]:
        """The hand-overs a resumed run can reuse: those to ``pending`` chunks, read back intact.

        Removes the rest: temporaries of a killed writer, hand-overs to chunks already stored,
        and damaged ones (truncated, corrupt: their source chunk's tiles run again).

        Returns:
            ``{(src, dst): path}`` of the good hand-overs, and the ``(src, dst)`` of damaged ones.
        """
        folder, wanted = self.root / "handover", set(pending)
        good: Handovers = {}
        bad: list[Link] = []
        for p in folder.glob(".*"):
            p.unlink(missing_ok=True)
        for p in sorted(folder.glob("*.npy")):
            link = _parse_link(p.stem)
            if link is None or link[1] not in wanted:
                p.unlink(missing_ok=True)
                continue
            try:
                self.read_handover(p)
            except OutputError:
                bad.append(link)
                p.unlink(missing_ok=True)
            else:
                good[link] = p
        if bad:
            log.warning("%s: %d spilled hand-over(s) damaged (truncated or corrupt): %s; "
                        "running their tiles again", self.root, len(bad),
                        ", ".join(f"{a}_{b}-{c}_{d}" for (a, b), (c, d) in bad[:10]))  # fmt: skip
        return good, bad

    def bytes_to_go(self) -> int:
        """Uncompressed bytes of the chunks not stored yet (an upper bound of what the store
        still needs on disk)."""
        group = self._group("r")
        total = sum(int(np.prod(group[n].shape)) for n in ARRAYS if n in group)
        arr = group["classes"]
        n_chunks = int(np.prod([-(-s // c) for s, c in zip(arr.shape, arr.chunks, strict=True)]))
        done = len(self._markers())
        return total * max(n_chunks - done, 0) // max(n_chunks, 1)

    def _failed(self, err: BaseException) -> OutputError:
        """The one-line error of a store write that failed (disk full, read-only, ...)."""
        try:
            need = self.bytes_to_go()
        except Exception:
            need = None
        return OutputError(f"{self.root}: the tile store cannot be written "
                           f"({space_problem(err, self.root.parent, need)}); free space or "
                           f"choose another --tiles-dir than {self.root.parent}, then run the "
                           "same command again: it resumes from the chunks already stored")  # fmt: skip

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _parse_link(stem: str) -> Link | None:
    """``(src, dst)`` from a hand-over's name ``i_j-k_l`` (None: not a hand-over's name)."""
    try:
        a, b = (tuple(int(x) for x in part.split("_")) for part in stem.split("-"))
    except ValueError:
        return None
    return (a, b) if len(a) == 2 and len(b) == 2 else None  # type: ignore[return-value]


def _stats(marker: dict[str, Any]) -> dict[str, Any]:
    """A done marker's chunk statistics (without its checksums)."""
    return {k: v for k, v in marker.items() if k != "check"}
