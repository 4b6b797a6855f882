"""The ``geoseg`` command line. Errors: one line on stderr naming the file and the fix, exit 2."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from geoseg.errors import GeosegError


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)  # fmt: skip


def parse_pairs(values: tuple[str, ...], what: str, example: str = "dem=dem.tif") -> dict[str, str]:
    """NAME=VALUE options -> dict; a value without '=' is a one-line error showing ``example``."""
    out = {}
    for v in values:
        if "=" not in v:
            raise GeosegError(f"{what} {v!r}: expected NAME=VALUE, e.g. {example}")
        k, val = v.split("=", 1)
        out[k.strip()] = val.strip()
    return out


_pairs = parse_pairs


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def cli(verbose: bool) -> None:
    """geoseg: semantic segmentation of huge GeoTIFFs."""
    _setup_logging(verbose)


@cli.command()
@click.argument("image")
@click.option("--model", "model", required=True, help="Model bundle folder or exported .onnx.")
@click.option("--out", "out", required=True, type=click.Path(), help="Output folder.")
@click.option("--modality", multiple=True, help="Extra modality NAME=PATH (e.g. dem=dem.tif).")
@click.option("--modality-bands", multiple=True, help="Bands of a modality NAME=1,2 or NAME=elev.")
@click.option("--bands", default=None, help="Bands of IMAGE feeding the model, e.g. 1,2,3.")
@click.option("--tile", type=int, default=None, help="Model tile size (default: bundle's).")
@click.option("--overlap", type=int, default=None, help="Tile overlap px (default: bundle halo).")
@click.option("--chunk", type=int, default=None,
              help="Output chunk, pixels (default 1024; smaller for small scenes).")
@click.option("--batch", type=int, default=None, help="Tiles per model call (default: 1 CPU, 8 CUDA).")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda (autocast).")
@click.option("--workers", type=int, default=None, help="Parallel chunk tasks (<= cores).")
@click.option("--amp/--no-amp", default=True, show_default=True, help="Autocast on CUDA.")
@click.option("--probabilities", is_flag=True, help="Also write per-class probability COG.")
@click.option("--no-confidence", is_flag=True, help="Skip the confidence COG.")
@click.option("--vector", type=click.Choice(["gpkg", "shp", "parquet", "fgb", "none"]),
              default="gpkg", show_default=True, help="Vector layer format.")
@click.option("--min-area", type=float, default=0.0, help="Drop polygons below this area (m²).")
@click.option("--simplify", type=float, default=0.0, help="Simplify tolerance (CRS units).")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Continue from finished chunks of the same run.")
@click.option("--overwrite", is_flag=True, help="Recompute even if the run is finished.")
@click.option("--tiles-dir", default="tiles", show_default=True, help="Tile store workspace.")
@click.option("--scheduler", default=None,
              help='Dask scheduler address tcp://HOST:PORT, or "local" for a LocalCluster.')
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def predict(image: str, model: str, out: str, modality: tuple[str, ...],
            modality_bands: tuple[str, ...], bands: str | None, **kw: object) -> None:  # fmt: skip
    """Predict IMAGE (plus --modality rasters) with a model bundle into --out."""
    from geoseg.runs.predict import PredictOptions
    from geoseg.runs.predict import predict as run_predict
    from geoseg.scene.scene import parse_band_spec

    opts = PredictOptions(
        bands=parse_band_spec(bands),
        modality_bands={k: parse_band_spec(v) for k, v in _pairs(modality_bands, "--modality-bands").items()},
        confidence=not kw.pop("no_confidence"),
        progress=not kw.pop("no_progress"),
        tiles_dir=Path(str(kw.pop("tiles_dir"))),
        **kw,
    )  # fmt: skip
    report = run_predict(image, model, out, _pairs(modality, "--modality"), opts)
    if not report["model"]["trained"]:
        click.echo("NOTE: this bundle has random (untrained) weights: the classes are "
                   "meaningless; it demonstrates the pipeline only.", err=True)  # fmt: skip
    click.echo(f"{report['valid_pixels']} valid pixels, {report['polygons']} polygons, "
               f"{report['timings_s']['total']:.1f} s")  # fmt: skip
    for key, path in report["outputs"].items():
        click.echo(f"  {key:14s} {path}")


@cli.command()
@click.argument("path")
def info(path: str) -> None:
    """Print what a raster or a model bundle holds."""
    from geoseg.cli.info import describe

    click.echo(json.dumps(describe(path), indent=2))


@cli.command()
@click.argument("bundle")
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", show_default=True)
@click.option("-o", "--output", default=None, help="Output file (default: BUNDLE.onnx).")
def export(bundle: str, fmt: str, output: str | None) -> None:
    """Export a bundle (ONNX: metadata readable by QGIS Deepness, dynamic batch)."""
    from geoseg.bundle.onnx_export import export_onnx

    out = Path(output) if output else Path(bundle.rstrip("/")).with_suffix(".onnx")
    export_onnx(bundle, out)
    click.echo(f"wrote {out}")


@cli.group()
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

    extra = {k: int(v) for k, v in _pairs(modality, "--modality").items()}
    kwargs = {}
    for k, v in _pairs(args, "--arg").items():
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


def main() -> None:
    """Entry point: GeosegError -> one line on stderr, exit code 2."""
    try:
        code = cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("geoseg: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except GeosegError as exc:
        click.echo(f"geoseg: error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("geoseg: interrupted; re-run the same command to resume", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


def _register_commands() -> None:
    from geoseg.cli import catalog as cli_catalog
    from geoseg.cli import train as cli_train

    cli_catalog.register(cli)
    cli_train.register(cli)


_register_commands()


if __name__ == "__main__":
    main()
