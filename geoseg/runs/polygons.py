"""The polygon layer written on a thread of its own, beside the model or beside the COG writes.

The streamed vectoriser (``outputs.stream``) reads the class raster in the tile store's own
chunk grid, row-major, and appends a chunk's polygons as soon as it has read it (merging those
cut by chunk lines one row later). :class:`PolygonsAhead` runs it on a thread whose reader waits
until the tile store holds the chunk it asks for. Started before the chunks are computed (a GPU
or a cluster runs the model), only the last chunk row's polygons and merge remain when the last
chunk is stored; started after them (the CPU's cores ran the model), it overlaps the COG writes.
The same chunks are read in the same order either way, so the file is the same, byte for byte.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from geoseg.geometry.window import PixelWindow
from geoseg.inference.engine import StageTimer
from geoseg.runs.job import RunSetup
from geoseg.runs.write import write_polygons
from geoseg.store.tiles import TileStore


class _Stopped(Exception):
    """The run stopped (failed or interrupted) before the chunk a reader waits for was stored."""


class PolygonsAhead:
    """A thread writing the run's polygon layer from chunks as the tile store receives them.

    ``start()`` before the chunks are computed, ``finish()`` once they are (raises what the
    thread raised), ``cancel()`` when the run fails (the vectoriser's atomic write removes
    the half-written layer). Timings go to ``timer``: ``vectorise`` (working, waits for
    chunks excluded) and ``polygons_wait``.
    """

    def __init__(self, run: RunSetup, store: TileStore, timer: StageTimer, poll: float = 0.05,
                 progress: bool = False):  # fmt: skip
        self.run, self.store, self.timer, self.poll = run, store, timer, poll
        self.progress = progress
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._waited = 0.0
        self._thread = threading.Thread(target=self._main, name="geoseg-polygons", daemon=True)
        #: ``time.perf_counter()`` when the layer was complete
        self.ended: float | None = None

    def start(self) -> PolygonsAhead:
        self._thread.start()
        return self

    def finish(self) -> None:
        """Wait for the layer; raise the thread's error, if any."""
        self._thread.join()
        if self._error is not None:
            raise self._error

    def cancel(self) -> None:
        """Stop the thread (it may wait for a chunk that will not come) and wait for it."""
        self._stop.set()
        self._thread.join()

    def _main(self) -> None:
        run, own = self.run, StageTimer()
        read = self.store.reader("classes")

        def ready(window: PixelWindow) -> np.ndarray:
            self._wait(window)
            return read(window)[0]

        try:
            write_polygons(ready, run.scene, run.card, run.paths, run.opts, own,
                           progress=self.progress)  # fmt: skip
        except BaseException as err:  # handed to finish(); a stopped run's is expected
            if not self._stop.is_set():
                self._error = err
        self.ended = time.perf_counter()
        own.add("vectorise", -self._waited)
        if self._waited:
            own.add("polygons_wait", self._waited)
        for stage, value in own.seconds.items():
            self.timer.add(stage, value)

    def _wait(self, window: PixelWindow) -> None:
        """Return once every chunk ``window`` covers is stored."""
        c = self.run.plan.chunk
        need = [(i, j) for i in range(window.r0 // c, (window.r1 - 1) // c + 1)
                for j in range(window.c0 // c, (window.c1 - 1) // c + 1)]  # fmt: skip
        t0 = None  # set on the first wait: started after the chunks, it never waits
        while not all(self.store.is_done(index) for index in need):
            t0 = t0 or time.perf_counter()
            if self._stop.wait(self.poll):
                raise _Stopped(f"chunks {need} were not stored")
        if t0 is not None:
            self._waited += time.perf_counter() - t0
