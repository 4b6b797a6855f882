"""Tiled prediction equals whole-image prediction; chunking and workers change nothing."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from geoseg.bundle.bundle import load_bundle, save_bundle
from geoseg.bundle.card import ModalityCard, ModelCard
from geoseg.geometry.window import PixelWindow
from geoseg.inference.chunks import ChunkJob, CoreShare, accumulate, finish
from geoseg.inference.engine import Engine
from geoseg.inference.graph import build_graph, run_graph
from geoseg.models import SegModel, register
from geoseg.scene.classes import default_classes
from geoseg.scene.scene import Scene
from geoseg.store.tiles import TileStore
from geoseg.tiling.plan import TilePlan
from tests.support import RGB


@register("test-convstack")
class ConvStack(SegModel):
    """Fully convolutional 3-layer stack, receptive radius 3 px (test model)."""

    size_multiple = 1

    def __init__(self, modalities: Mapping[str, int], num_classes: int, args) -> None:
        super().__init__(modalities, num_classes, args)
        self.net = nn.Sequential(
            nn.Conv2d(self.in_channels, 8, 3, padding=1), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
            nn.Conv2d(8, num_classes, 3, padding=1),
        )  # fmt: skip

    @property
    def halo(self) -> int:
        return 3

    def _forward(self, inputs: Mapping[str, Tensor]) -> Tensor:
        return self.net(self.stack(inputs))


@pytest.fixture(scope="module")
def convstack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(1)
    model = ConvStack({"image": 3}, 4, ConvStack.Args())
    with torch.no_grad():  # make classes compete so argmax is not trivially constant
        model.net[-1].weight.mul_(8)
    card = ModelCard(architecture="test-convstack",
                     modalities={"image": ModalityCard(bands=["r", "g", "b"], mean=[60] * 3,
                                                       std=[50] * 3)},
                     classes=default_classes(4), tile_size=128, halo=3)  # fmt: skip
    return save_bundle(model, card, tmp_path_factory.mktemp("b") / "convstack")


def run_tiled(bundle: Path, scene: Scene, tile: int, overlap: int, chunk: int, root: Path,
              workers: int = 1, batch: int = 4, share: bool = False):  # fmt: skip
    b = load_bundle(bundle)
    engine = Engine(b)
    plan = TilePlan(scene.grid.height, scene.grid.width, tile, overlap, chunk)
    job = ChunkJob(scene, plan, batch, np.array([c.id for c in b.card.classes], np.uint8), True)
    if share:  # the workers' cores go to the last chunks
        job.cores = CoreShare(2, workers, sum(1 for c in plan.chunks.values() if c.region))
    store = TileStore.create(root, scene.grid.shape, chunk, b.card.num_classes, True, {})
    graph, finals, timings = build_graph(job, engine, list(plan.chunks), store)
    run_graph(graph, finals + timings, workers)
    assert not list(root.glob("handover/*"))  # every spilled hand-over was taken
    h, w = scene.grid.shape
    whole = PixelWindow(0, h, 0, w)
    return store.reader("classes")(whole)[0], store.reader("probabilities")(whole)


def whole_image(bundle: Path, scene: Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    engine = Engine(load_bundle(bundle))
    arrays, valid = scene.read(PixelWindow(0, scene.grid.height, 0, scene.grid.width))
    x = engine.normalise(arrays, valid)
    probs = engine.probabilities({k: v[None] for k, v in x.items()})[0]
    return probs.argmax(0), probs, valid


@pytest.mark.parametrize("tile,overlap", [(64, 16), (128, 32), (200, 24)])
def test_tiled_equals_whole_image_convstack(convstack: Path, tmp_path: Path, tile: int,
                                            overlap: int) -> None:  # fmt: skip
    scene = Scene.open({"image": RGB})
    ref, ref_p, valid = whole_image(convstack, scene)
    cls, probs = run_tiled(convstack, scene, tile, overlap, 300, tmp_path / "s")
    assert (cls[valid] == ref[valid]).mean() >= 0.999
    # quantised probabilities (x/254) agree within quantisation + blending of border pixels
    diff = np.abs(probs[:, valid].astype(float) / 254 - ref_p[:, valid])
    assert np.quantile(diff, 0.999) < 0.01
    assert diff.max() < 0.05


def test_tiled_equals_whole_image_unet(unet_rgb: Path, tmp_path: Path) -> None:
    scene = Scene.open({"image": RGB})
    ref, _, valid = whole_image(unet_rgb, scene)
    cls, _ = run_tiled(unet_rgb, scene, 256, 64, 400, tmp_path / "s")
    assert (cls[valid] == ref[valid]).mean() >= 0.999


def test_chunk_size_and_workers_do_not_change_the_result(unet_rgb: Path, tmp_path: Path) -> None:
    scene = Scene.open({"image": RGB})
    base, base_p = run_tiled(unet_rgb, scene, 256, 32, 2048, tmp_path / "a")
    for i, (chunk, workers, batch) in enumerate([(100, 2, 3), (333, 1, 4), (250, 2, 1)]):
        cls, probs = run_tiled(unet_rgb, scene, 256, 32, chunk, tmp_path / f"c{i}", workers, batch,
                               share=i == 2)  # fmt: skip
        np.testing.assert_array_equal(cls, base)
        assert np.abs(probs.astype(int) - base_p).max() <= 1


def test_nodata_collar_is_nodata_everywhere(unet_rgb: Path, tmp_path: Path) -> None:
    scene = Scene.open({"image": RGB})
    _, valid = scene.read(PixelWindow(0, scene.grid.height, 0, scene.grid.width))
    assert 0.3 < 1 - valid.mean() < 0.35  # the 32.5 % collar
    cls, probs = run_tiled(unet_rgb, scene, 256, 32, 300, tmp_path / "s")
    assert (cls[~valid] == 255).all() and (cls[valid] != 255).all()
    assert (probs[:, ~valid] == 255).all()


def _chunked(unet_rgb: Path) -> tuple[ChunkJob, Engine]:
    """The RGB scene in 200 px chunks (several chunk rows) with its engine."""
    scene = Scene.open({"image": RGB})
    b = load_bundle(unet_rgb)
    plan = TilePlan(scene.grid.height, scene.grid.width, 256, 32, 200)
    return ChunkJob(scene, plan, 2, np.arange(b.card.num_classes, dtype=np.uint8), False), Engine(b)


def _store(job: ChunkJob, root: Path) -> TileStore:
    return TileStore.create(root, job.scene.grid.shape, job.plan.chunk, len(job.class_ids), False, {})


def test_handovers_wait_in_the_store(unet_rgb: Path, tmp_path: Path) -> None:
    job, engine = _chunked(unet_rgb)
    store = _store(job, tmp_path / "s")
    job.spill_rate = 0.0  # a chunk whose tiles run fast keeps its own in memory
    pieces = accumulate(job, engine, (0, 0), store)["pieces"]
    spilled = {dst for dst, (_, part, _) in pieces.items() if isinstance(part, Path)}
    # every piece but the chunk's own: they outlive a killed run
    assert spilled == set(pieces) - {(0, 0)} and {(0, 1), (1, 0)} <= spilled
    job.spill_rate = float("inf")  # one whose tiles took long spills its own too
    slow = accumulate(job, engine, (0, 0), store)["pieces"]
    assert all(isinstance(part, Path) for _, part, _ in slow.values())
    np.testing.assert_array_equal(TileStore.read_handover(slow[(0, 0)][1])[0],
                                  accumulate(job, engine, (0, 0))["pieces"][(0, 0)][1])  # fmt: skip
    in_memory = accumulate(job, engine, (0, 0))["pieces"]  # without a store: all in memory
    box, path, _ = pieces[(1, 0)]
    part, valid = TileStore.read_handover(path)
    assert box == in_memory[(1, 0)][0]
    np.testing.assert_array_equal(part, in_memory[(1, 0)][1])
    np.testing.assert_array_equal(valid, in_memory[(1, 0)][2])


def test_finish_can_be_retried_after_its_worker_died(unet_rgb: Path, tmp_path: Path) -> None:
    # Dask reruns a finish whose worker was killed, with the same inputs: the spilled
    # hand-overs must still be there, and a chunk already stored must not fail or change
    job, engine = _chunked(unet_rgb)
    plan, store = job.plan, _store(job, tmp_path / "s")
    results = {src: accumulate(job, engine, src, store) for src in plan.contributors((1, 0))}
    pieces = [results[src]["pieces"].get((1, 0)) for src in plan.contributors((1, 0))]
    spilled = [p[1] for p in pieces if p is not None and isinstance(p[1], Path)]
    assert spilled and all(p.exists() for p in spilled)
    # killed between reading its inputs and storing the chunk: nothing consumed
    TileStore.read_handover(spilled[0])
    stats = finish(job, store, (1, 0), *pieces)
    assert store.is_done((1, 0)) and not any(p.exists() for p in spilled)
    # killed after storing (its result lost with the worker): the rerun gives the same stats
    assert finish(job, store, (1, 0), *pieces) == stats
    ref = _store(job, tmp_path / "r")
    direct = [accumulate(job, engine, src)["pieces"].get((1, 0))
              for src in plan.contributors((1, 0))]  # fmt: skip
    assert finish(job, ref, (1, 0), *direct) == stats
    core = plan.chunks[(1, 0)].core
    np.testing.assert_array_equal(store.reader("classes")(core), ref.reader("classes")(core))


def test_a_core_share_gives_the_idle_workers_cores_to_the_last_chunks() -> None:
    share = CoreShare(cores=4, workers=2, tasks=3)
    assert share.threads() == 2  # 3 chunks to run, 2 workers: 2 threads each
    share.done()
    assert share.threads() == 2
    share.done()  # the last chunk: every core
    assert share.threads() == 4
    share.done()
    assert share.threads() == 4
    assert CoreShare(cores=2, workers=4, tasks=9).threads() == 1  # never below one thread
