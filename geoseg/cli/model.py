"""``geoseg model list|init|import``: registered architectures, untrained bundles (optionally
from pretrained encoder weights), and bundles from torchgeo checkpoints."""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path

import click

from geoseg.cli.options import parse_pairs


@click.group()
def model() -> None:
    """Registered architectures and bundles."""


@model.command("list")
def model_list() -> None:
    """List registered architectures."""
    for name, doc in sorted(builtin_models().items()):
        click.echo(f"{name:16s} {doc}")


def builtin_models() -> dict[str, str]:
    """geoseg's architectures and the first line of their docstrings, read from the source of
    ``geoseg.models`` (classes decorated ``@register("name")``): listing them this way takes
    milliseconds, importing the models (torch, timm, smp) seconds."""
    spec = importlib.util.find_spec("geoseg.models")
    assert spec is not None and spec.submodule_search_locations
    out = {}
    for path in sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ClassDef):
                continue
            for deco in node.decorator_list:
                if (isinstance(deco, ast.Call) and getattr(deco.func, "id", "") == "register"
                        and deco.args and isinstance(deco.args[0], ast.Constant)):  # fmt: skip
                    out[deco.args[0].value] = (ast.get_docstring(node) or "").splitlines()[0]
    return out


@model.command("init")
@click.argument("arch")
@click.option("--bands", type=int, default=None,
              help="Bands of the image modality (default with torchgeo --weights: the weight's).")
@click.option("--classes", type=int, required=True, help="Number of classes.")
@click.option("--modality", multiple=True, help="Extra modality NAME=BANDS, e.g. dem=1.")
@click.option("--encoder", default=None, help="Encoder/backbone name, e.g. resnet18.")
@click.option("--weights", default=None,
              help="Pretrained encoder weights: imagenet, a .safetensors file, or a torchgeo "
              "weight such as torchgeo:ResNet18_Weights.SENTINEL2_RGB_MOCO (`geoseg weights list`).")
@click.option("--roles", multiple=True,
              help="Band roles of the image, e.g. blue,green,red,nir (NAME=ROLES for another "
              "modality); torchgeo weights are matched to bands by role (default: the weight's).")
@click.option("--arg", "args", multiple=True, help="Architecture argument KEY=VALUE (JSON value).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--tile", type=int, default=512, show_default=True)
@click.option("--stats-from", default=None, help="Raster to compute per-band normalisation from.")
@click.option("--stats-bands", default=None, help="Bands of --stats-from to use, e.g. 3,2,1.")
@click.option("-o", "--output", required=True, type=click.Path(), help="Bundle folder to write.")
def model_init(arch: str, bands: int | None, classes: int, modality: tuple[str, ...],
               encoder: str | None, weights: str | None, roles: tuple[str, ...],
               args: tuple[str, ...], seed: int, tile: int, stats_from: str | None,
               stats_bands: str | None, output: str) -> None:  # fmt: skip
    """Write an untrained bundle of ARCH (random weights from torch.manual_seed(SEED), the
    encoder's from --weights when given)."""
    from geoseg.bundle.untrained import init_bundle
    from geoseg.scene.scene import parse_band_spec

    extra = {k: int(v) for k, v in parse_pairs(modality, "--modality", example="dem=1").items()}
    kwargs = {}
    for k, v in parse_pairs(args, "--arg", example="encoder_depth=4").items():
        try:
            kwargs[k] = json.loads(v)
        except ValueError:
            kwargs[k] = v
    role_map = parse_roles(roles)
    if weights:
        kwargs["encoder_weights"] = weights
        if weights.startswith("torchgeo:"):
            from geoseg.models.torchgeo_weights import resolve

            w = resolve(weights)
            kwargs.setdefault("encoder", w.model)
            bands = bands or len(w.bands)
            if "image" not in role_map and bands == len(w.bands):
                role_map["image"] = list(w.roles)
    if bands is None:
        raise click.UsageError("--bands is needed (a torchgeo --weights gives its own)")
    if encoder:
        kwargs["encoder"] = encoder
    path = init_bundle(arch, {"image": bands, **extra}, classes, kwargs, seed=seed, tile=tile,
                       stats_from=stats_from, stats_bands=parse_band_spec(stats_bands),
                       roles=role_map, output=output)  # fmt: skip
    click.echo(f"wrote untrained {arch} bundle to {path}")


def parse_roles(values: tuple[str, ...]) -> dict[str, list[str]]:
    """``--roles r,g,b`` (image) and ``--roles dem=dem`` -> roles per modality."""
    out = {}
    for v in values:
        name, _, roles = v.rpartition("=")
        out[name.strip() or "image"] = [r.strip() for r in roles.split(",") if r.strip()]
    return out


@model.command("import")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--from", "source", type=click.Choice(["torchgeo"]), required=True,
              help="Where the checkpoint comes from.")
@click.option("--roles", default=None, help="Band roles of the image, e.g. red,green,blue.")
@click.option("--class-names", default=None, help="Class names in output order, e.g. "
              "background,building (default class_0, class_1...).")
@click.option("--mean", default="0", show_default=True,
              help="Normalisation the task saw: one value or one per band.")
@click.option("--std", default="255", show_default=True,
              help="(x - mean) / std; 255 is torchgeo's BaseDataModule scaling.")
@click.option("--tile", type=int, default=512, show_default=True)
@click.option("-o", "--output", required=True, type=click.Path(), help="Bundle folder to write.")
def model_import(checkpoint: str, source: str, roles: str | None, class_names: str | None,
                 mean: str, std: str, tile: int, output: str) -> None:  # fmt: skip
    """Turn a torchgeo checkpoint into a bundle: a SemanticSegmentationTask .ckpt (unet,
    deeplabv3+) or a FarSeg state dict, read without running code (weights_only)."""
    from geoseg.bundle.torchgeo_import import import_torchgeo

    def floats(text: str, what: str) -> list[float]:
        try:
            return [float(v) for v in text.split(",")]
        except ValueError:
            raise click.BadParameter(f"{text!r}: numbers separated by commas", param_hint=what) from None

    path = import_torchgeo(checkpoint, output, roles=roles.split(",") if roles else None,
                           class_names=class_names.split(",") if class_names else None,
                           mean=floats(mean, "--mean"), std=floats(std, "--std"), tile=tile)
    click.echo(f"wrote {source} checkpoint {checkpoint} as bundle {path}")
