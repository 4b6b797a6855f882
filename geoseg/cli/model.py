"""``geoseg model list|init``: registered architectures and untrained bundles."""

from __future__ import annotations

import json

import click

from geoseg.cli.options import parse_pairs


@click.group()
def model() -> None:
    """Registered architectures and bundles."""


@model.command("list")
def model_list() -> None:
    """List registered architectures."""
    from geoseg.models import get_model_class, list_models

    for name in list_models():
        doc = (get_model_class(name).__doc__ or "").strip().splitlines()[0]
        click.echo(f"{name:16s} {doc}")


@model.command("init")
@click.argument("arch")
@click.option("--bands", type=int, required=True, help="Bands of the image modality.")
@click.option("--classes", type=int, required=True, help="Number of classes.")
@click.option("--modality", multiple=True, help="Extra modality NAME=BANDS, e.g. dem=1.")
@click.option("--encoder", default=None, help="Encoder/backbone name, e.g. resnet18.")
@click.option("--arg", "args", multiple=True, help="Architecture argument KEY=VALUE (JSON value).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--tile", type=int, default=512, show_default=True)
@click.option("--stats-from", default=None, help="Raster to compute per-band normalisation from.")
@click.option("--stats-bands", default=None, help="Bands of --stats-from to use, e.g. 3,2,1.")
@click.option("-o", "--output", required=True, type=click.Path(), help="Bundle folder to write.")
def model_init(arch: str, bands: int, classes: int, modality: tuple[str, ...], encoder: str | None,
               args: tuple[str, ...], seed: int, tile: int, stats_from: str | None,
               stats_bands: str | None, output: str) -> None:  # fmt: skip
    """Write an untrained bundle of ARCH (random weights from torch.manual_seed(SEED))."""
    from geoseg.bundle.untrained import init_bundle
    from geoseg.scene.scene import parse_band_spec

    extra = {k: int(v) for k, v in parse_pairs(modality, "--modality", example="dem=1").items()}
    kwargs = {}
    for k, v in parse_pairs(args, "--arg", example="encoder_depth=4").items():
        try:
            kwargs[k] = json.loads(v)
        except ValueError:
            kwargs[k] = v
    if encoder:
        kwargs["encoder"] = encoder
    path = init_bundle(arch, {"image": bands, **extra}, classes, kwargs, seed=seed, tile=tile,
                       stats_from=stats_from, stats_bands=parse_band_spec(stats_bands),
                       output=output)  # fmt: skip
    click.echo(f"wrote untrained {arch} bundle to {path}")
