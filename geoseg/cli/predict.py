"""``geoseg predict``, ``geoseg info`` and ``geoseg export``: one scene, one model."""

from __future__ import annotations

import json
from pathlib import Path

import click

from geoseg.cli.options import options_from, parse_pairs, predict_options


@click.command()
@click.argument("image")
@click.option("--model", "model", required=True, help="Model bundle folder or exported .onnx.")
@click.option("--out", "out", required=True, type=click.Path(), help="Output folder.")
@click.option("--modality", multiple=True, help="Extra modality NAME=PATH (e.g. dem=dem.tif).")
@predict_options()
def predict(image: str, model: str, out: str, modality: tuple[str, ...], **kw: object) -> None:
    """Predict IMAGE (plus --modality rasters) with a model bundle into --out."""
    from geoseg.runs.predict import predict as run_predict

    opts = options_from(kw)
    report = run_predict(image, model, out, parse_pairs(modality, "--modality"), opts)
    if not report["model"]["trained"]:
        click.echo("NOTE: this bundle has random (untrained) weights: the classes are "
                   "meaningless; it demonstrates the pipeline only.", err=True)  # fmt: skip
    click.echo(f"{report['valid_pixels']} valid pixels, {report['polygons']} polygons, "
               f"{report['timings_s']['total']:.1f} s")  # fmt: skip
    for key, path in report["outputs"].items():
        click.echo(f"  {key:14s} {path}")


@click.command()
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="All of it as JSON (for scripts).")
def info(path: str, as_json: bool) -> None:
    """Summarise what a raster, a model bundle or an exported .onnx model holds."""
    from geoseg.cli.info import describe, summary

    click.echo(json.dumps(describe(path), indent=2) if as_json else summary(path))


@click.command()
@click.argument("bundle")
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", show_default=True)
@click.option("-o", "--output", default=None, help="Output file (default: BUNDLE.onnx).")
def export(bundle: str, fmt: str, output: str | None) -> None:
    """Export a bundle (ONNX: metadata readable by QGIS Deepness, dynamic batch)."""
    from geoseg.bundle.onnx_export import export_onnx

    out = Path(output) if output else Path(bundle.rstrip("/")).with_suffix(".onnx")
    export_onnx(bundle, out)
    click.echo(f"wrote {out}")
