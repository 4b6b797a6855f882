"""Training end to end on real labelled data, through the CLI: train → bundle → predict →
evaluate; resume after a kill; 2-process CPU DDP; bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from geoseg.bundle.folder import read_card
from geoseg.errors import ConfigError, InputError
from geoseg.pipeline.pipeline import Pipeline
from tests.support import DATA, invoke, run_cli

ALEX = DATA / "alexandria"


def train_pipeline(tmp_path: Path, *, steps: int = 6, extra: str = "", labels: str | None = None,
                   evaluate: bool = False, name: str = "pipe.yaml") -> Path:  # fmt: skip
    """A tiny training pipeline on the vendored Alexandria nDSM + building polygons."""
    labels = labels or f"{{path: {ALEX / 'buildings.geojson'}, class_value: 1}}"
    text = f"""version: 1
name: t
workdir: {tmp_path / 'work'}
steps:
  - type: train
    classes:
      - {{id: 0, name: background, color: "#d9d9d9"}}
      - {{id: 1, name: building, color: "#e31a1c"}}
    scenes:
      - id: alexandria
        modalities:
          height: {{path: {ALEX / 'hag.tif'}, roles: [ndsm]}}
        labels: {labels}
    vector_labels: {{background: 0, extent: labels}}
    model: {{architecture: tinycnn, arguments: {{width: 8}}, tile: 64}}
    split: {{by: stripe, val_fraction: 0.3, gap: 8}}
    sampling: {{window: 32, mode: balanced}}
    steps: {steps}
    batch: 2
    val_every: 3
    device: cpu
    threads: 1
{extra}"""
    if evaluate:
        text += """  - type: evaluate
    model: "@train"
    holdout: "@train.report"
    tile: 64
    chunk: 128
"""
    path = tmp_path / name
    path.write_text(text)
    return path


def test_train_predict_evaluate_through_the_cli(tmp_path: Path) -> None:
    pipe = train_pipeline(tmp_path, evaluate=True)
    proc = run_cli("train", pipe, "--no-progress")
    assert "step train: ok" in proc.stdout and "step evaluate: ok" in proc.stdout
    run = tmp_path / "work" / "train"
    card = read_card(run / "best")
    assert card.trained and card.architecture == "tinycnn"
    assert card.modalities["height"].bands == ["ndsm"]
    assert card.modalities["height"].std == [10.0]  # nDSM: the fixed elevation scaling
    assert card.metrics["validation"]["miou"] is not None
    assert [c.name for c in card.classes] == ["background", "building"]
    rows = (run / "history.csv").read_text().splitlines()
    assert rows[0].startswith("step,") and len(rows) == 3  # validations at steps 3 and 6
    rep = json.loads((run / "train_report.json").read_text())
    assert rep["status"] == "finished" and rep["steps_done"] == 6
    assert rep["split"]["train_windows_touching_validation"] == 0
    assert "training windows keep 8 px away" in rep["split"]["statement"]
    assert sorted(p.name for p in (run / "checkpoint").iterdir()) == ["state.json",
                                                                      "state.safetensors"]
    ev = json.loads((tmp_path / "work" / "evaluate" / "evaluation.json").read_text())
    assert ev["pixels"] > 1000 and ev["regions"] == "held-out areas"

    out = tmp_path / "pred"
    run_cli("predict", ALEX / "hag.tif", "--model", run / "best", "--out", out,
            "--vector", "none", "--no-progress", "--tiles-dir", tmp_path / "tiles")  # fmt: skip
    assert (out / "hag_classes.tif").is_file()

    ev_dir = tmp_path / "eval"
    proc = run_cli("evaluate", ALEX / "hag.tif", "--labels", ALEX / "buildings.geojson",
                   "--class-value", "1", "--background", "0", "--extent", "labels", "--model",
                   run / "best", "--out", ev_dir, "--tile", "64", "--no-progress",
                   "--tiles-dir", tmp_path / "tiles")  # fmt: skip
    assert "mIoU" in proc.stdout
    whole = json.loads((ev_dir / "evaluation.json").read_text())
    assert whole["pixels"] > ev["pixels"]  # whole labelled extent > held-out stripe
    assert (ev_dir / "evaluation.md").is_file() and (ev_dir / "evaluation_confusion.png").is_file()


def test_resume_after_kill(tmp_path: Path) -> None:
    pipe = train_pipeline(tmp_path, steps=150, extra="    checkpoint_every: 2\n"
                          "    val_every: 100\n")  # fmt: skip
    state = tmp_path / "work" / "train" / "checkpoint" / "state.json"
    proc = subprocess.Popen([sys.executable, "-m", "geoseg.cli.main", "train", str(pipe), "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.time() + 120
        while not state.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    killed_at = json.loads(state.read_text())["step"]
    assert 0 < killed_at < 150, killed_at
    run_cli("train", pipe, "--no-progress")
    rep = json.loads((tmp_path / "work" / "train" / "train_report.json").read_text())
    assert rep["status"] == "finished" and rep["steps_done"] == 150
    assert rep["resumed_from_step"] is not None and rep["resumed_from_step"] >= killed_at
    assert [r["step"] for r in rep_history(tmp_path)] == [100, 150]


def rep_history(tmp_path: Path) -> list[dict]:
    return json.loads((tmp_path / "work" / "train" / "history.json").read_text())


def test_ddp_two_processes_on_cpu(tmp_path: Path) -> None:
    pipe = train_pipeline(tmp_path, steps=4, extra="    val_every: 2\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", "-m", "geoseg.cli.main", "train", str(pipe),
                           "--no-progress"], capture_output=True, text=True, env=env,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads((tmp_path / "work" / "train" / "train_report.json").read_text())
    assert rep["world_size"] == 2 and rep["status"] == "finished"
    assert rep["samples_seen"] == 4 * 2 * 2  # steps × batch × processes
    assert read_card(tmp_path / "work" / "train" / "best").trained


# --------------------------------------------------------------------------- bad input


def test_unknown_pipeline_key_is_one_line_exit_2(tmp_path: Path) -> None:
    pipe = train_pipeline(tmp_path, extra="    sampling: {windw: 32}\n")
    code, _, stderr = invoke("train", pipe)
    assert code == 2
    last = stderr.strip().splitlines()[-1]
    assert str(pipe) in last and "unknown key 'windw'" in last and "did you mean 'window'" in last


@pytest.mark.parametrize(("extra", "expect"), [
    ("    epochs: 3\n", "unknown key 'epochs'"),
    ("    recipe: segformer\n", "unknown recipe 'segformer'"),
    ("    profiles: {smoke: {steps: 2, optimiser: {lr: 1}}}\n",
     "profile 'smoke': unknown key 'optimiser'"),
    ("    profile: full\n", "profile 'full' is not defined"),
    ("    best_metric: loss\n", "best_metric 'loss'"),
])  # fmt: skip
def test_schema_errors(tmp_path: Path, extra: str, expect: str) -> None:
    with pytest.raises(ConfigError) as err:
        Pipeline.load(train_pipeline(tmp_path, extra=extra))
    assert expect in str(err.value) and "\n" not in str(err.value)


def _run_train(pipe: Path) -> None:
    Pipeline.load(pipe).run(progress=False)


def test_labels_that_do_not_overlap(tmp_path: Path) -> None:
    import geopandas as gpd

    far = gpd.read_file(ALEX / "buildings.geojson")
    far["geometry"] = far.geometry.translate(1.0, 0.0)  # one degree east
    far.to_file(tmp_path / "far.geojson")
    pipe = train_pipeline(tmp_path, labels=f"{{path: {tmp_path / 'far.geojson'}, class_value: 1}}")
    with pytest.raises(InputError, match="labels do not overlap the scene"):
        _run_train(pipe)


def test_missing_class_field_and_ids_outside_the_table(tmp_path: Path) -> None:
    pipe = train_pipeline(tmp_path, labels=f"{{path: {ALEX / 'buildings.geojson'}, "
                          "class_field: CLASS}")  # fmt: skip
    with pytest.raises(InputError, match=r"no attribute 'CLASS' \(it has \['HEIGHT', "):
        _run_train(pipe)
    pipe = train_pipeline(tmp_path, labels=f"{{path: {ALEX / 'buildings.geojson'}, "
                          "class_value: 7}", name="p2.yaml")  # fmt: skip
    with pytest.raises(InputError, match="class_value 7 is not in the class table"):
        _run_train(pipe)


def test_own_losses_and_training_only_state(tmp_path: Path) -> None:
    """FarSeg trains with its foreground-aware loss; the step counter is checkpointed, not
    bundled. HPCL-Net trains with CE + contrast; momentum encoder and queues likewise."""
    from geoseg.training import TrainConfig
    from geoseg.training.loop import train

    base = {"classes": [{"id": 0, "name": "background"}, {"id": 1, "name": "building"}],
            "scenes": [{"id": "alexandria",
                        "modalities": {"image": str(ALEX / "dsm.tif"),
                                       "dem": str(ALEX / "dtm.tif")},
                        "labels": {"path": str(ALEX / "buildings.geojson"), "class_value": 1}}],
            "vector_labels": {"background": 0, "extent": "labels"},
            "split": {"by": "blocks", "block": 64, "gap": 8}, "sampling": {"window": 32},
            "steps": 2, "batch": 2, "val_every": 2, "device": "cpu"}  # fmt: skip
    small = {"encoder": "resnet18", "decoder_channels": 16}
    runs = {
        "farseg": {"architecture": "farseg", "arguments": {**small, "fpn_channels": 16}},
        "hpclnet": {"architecture": "hpclnet",
                    "arguments": {**small, "embed_dim": 8, "proj_hidden": 16, "queue_size": 32,
                                  "warmup_steps": 0, "anchors_per_class": 8}},
    }  # fmt: skip
    for name, model in runs.items():
        res = train(TrainConfig(**base, model=model), tmp_path / name, progress=False)
        rep = json.loads(res.report.read_text())
        assert rep["loss"] == ("FarSeg" if name == "farseg" else "HPCLNet") + ".training_loss"
        ckpt = load_file(str(res.out / "checkpoint" / "state.safetensors"))
        bundle = load_file(str(res.best / "weights.safetensors"))
        if name == "farseg":
            assert int(ckpt["model.criterion.step"]) == 2
            assert not any(k.startswith("criterion.") for k in bundle)
        else:
            assert int(ckpt["model.train_step"]) == 2
            assert "model.queue" in ckpt and any(k.startswith("model.momentum_") for k in ckpt)
            assert not any(k.startswith(("queue", "momentum_", "projector.")) for k in bundle)
        assert all(torch.isfinite(v).all() for v in bundle.values() if v.is_floating_point())


# --------------------------------------------------------------------------- shipped files

REPO = Path(__file__).resolve().parents[2]


SHIPPED = [*sorted(p.name for p in (REPO / "pipelines").glob("train-*.yaml")), "demo.yaml"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_training_pipelines_validate(name: str) -> None:
    pipe = Pipeline.load(REPO / "pipelines" / name)
    train_steps = [s for s in pipe.steps if s.type == "train"]
    assert train_steps
    for step in pipe.steps:
        for profile in step.profiles:
            step.config(profile)  # every profile is a valid configuration
    if name != "demo.yaml":
        assert {"smoke", "full"} <= set(train_steps[0].profiles)
        assert train_steps[0].config("smoke").device == "cpu"


def test_committed_demo_bundle(tmp_path: Path) -> None:
    from geoseg.runs.options import PredictOptions
    from geoseg.runs.predict import predict

    demo = REPO / "models" / "demo"
    size = sum(p.stat().st_size for p in demo.iterdir())
    assert size <= 10 * 2**20
    card = read_card(demo)
    assert card.trained and list(card.modalities) == ["height", "dsm"]
    assert [c.name for c in card.classes] == ["background", "building"]
    rep = predict(ALEX / "hag.tif", demo, tmp_path, {"dsm": ALEX / "dsm.tif"},
                  PredictOptions(vector="none", progress=False, tiles_dir=tmp_path / "tiles"))
    built = rep["classes"]["building"]["pixels"] / rep["valid_pixels"]
    assert 0.03 < built < 0.3  # buildings are found, not everywhere
