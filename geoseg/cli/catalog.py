"""CLI: ``geoseg catalog validate|show|build|convert`` and ``geoseg run PIPELINE``.

``register(cli)`` adds them to the main ``geoseg`` group. Exit codes: 0 fine, 1 a batch
finished with failed scenes, 2 invalid input (GeosegError, one line on stderr).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import click

from geoseg.cli.options import parse_pairs
from geoseg.errors import ConfigError


@click.group("catalog")
def catalog_group() -> None:
    """Scene catalogs: validate, summarise, build from dataset layouts, convert."""


#: the flag that trusts a catalog's paths outside its folder (geoseg.catalog.paths)
allow_outside_option = click.option(
    "--allow-outside-paths", "allow_outside", is_flag=True, default=None,
    help="Let the catalog point outside its folder (through .. or symbolic links) and read "
    "other URL schemes: only for catalogs you trust.")  # fmt: skip


@catalog_group.command("validate")
@click.argument("catalog")
@click.option("--quick", is_flag=True, help="Headers only: skip reading pixels and label values.")
@allow_outside_option
def validate_cmd(catalog: str, quick: bool, allow_outside: bool | None) -> None:
    """Check that every file of CATALOG exists and opens, grids overlap and classes match."""
    from geoseg.catalog.loader import load_catalog
    from geoseg.catalog.validate import validate_catalog

    cat = load_catalog(catalog, allow_outside or None)
    check = validate_catalog(cat, pixels=not quick)
    click.echo(check.table())
    if check.ok:
        click.echo(f"{catalog}: {len(cat)} scene(s), no problem found")
        return
    for problem in check.problems:
        click.echo(f"{catalog}: {problem}", err=True)
    raise ConfigError(f"{catalog}: {len(check.problems)} problem(s) in "
                      f"{sum(r['status'] != 'ok' for r in check.rows)} scene(s); fix them "
                      "and validate again")  # fmt: skip


@catalog_group.command("show")
@click.argument("catalog")
@click.option("--json", "as_json", is_flag=True, help="Print the catalog as JSON.")
@allow_outside_option
def show_cmd(catalog: str, as_json: bool, allow_outside: bool | None) -> None:
    """Summarise CATALOG: scenes, splits, modalities and band roles, labels, classes."""
    from geoseg.catalog.loader import load_catalog
    from geoseg.catalog.validate import format_table

    cat = load_catalog(catalog, allow_outside or None)
    if as_json:
        click.echo(json.dumps(cat.to_dict(), indent=2))
        return
    scenes = cat.scenes
    splits = Counter(s.split or "none" for s in scenes)
    click.echo(f"catalog {cat.name} ({cat.source})")
    if cat.spec.description:
        click.echo(f"  {cat.spec.description}")
    click.echo(f"scenes: {len(scenes)} ({', '.join(f'{k} {v}' for k, v in splits.items())})")
    mods: dict[str, list] = {}
    for s in scenes:
        for n, m in s.modalities.items():
            mods.setdefault(n, []).append(m)
    for n, ms in mods.items():
        roles = Counter(",".join(m.roles) for m in ms if m.roles)
        text = "; ".join(f"roles {r} ({c})" for r, c in roles.items()) or "no band roles"
        click.echo(f"modality {n}: {len(ms)} scene(s), {text}")
    kinds = Counter(s.labels.kind for s in scenes if s.labels)
    click.echo(f"labels: {sum(kinds.values())} scene(s)"
               + (f" ({', '.join(f'{k} {v}' for k, v in kinds.items())})" if kinds else ""))
    if cat.classes:
        click.echo("classes: " + ", ".join(f"{c.id} {c.name} {c.color}" for c in cat.classes))
    rows = [{"scene": s.id, "split": s.split or "-",
             "modalities": " ".join(f"{n}[{','.join(map(str, m.bands)) if m.bands else 'all'}]"
                                    for n, m in s.modalities.items()),
             "labels": s.labels.kind if s.labels else "-"} for s in scenes]  # fmt: skip
    click.echo(format_table(rows))


@catalog_group.command("build")
@click.argument("layout")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Catalog to write: .yaml, or .json for a STAC ItemCollection.")
@click.option("--images", default=None, help="pattern: glob of the images under DIRECTORY.")
@click.option("--labels", default=None, help="pattern: label path template, e.g. masks/{stem}.png")
@click.option("--modality", multiple=True, help="pattern: extra modality NAME=TEMPLATE.")
@click.option("--match", default=None, help="pattern: regex on image names; named groups "
              "become {placeholders}.")  # fmt: skip
@click.option("--id", "id_template", default=None, help="pattern: scene id template ({stem}).")
@click.option("--roles", default=None, help="pattern: band roles of the images: red,green,blue")
@click.option("--product", default=None, help="potsdam: RGBIR, RGB or IRRG (default: first found)")
@click.option("--eroded", is_flag=True, help="vaihingen/potsdam: eroded (noBoundary) labels")
def build_cmd(layout: str, directory: str, output: str, images: str | None, labels: str | None,
              modality: tuple[str, ...], match: str | None, id_template: str | None,
              roles: str | None, product: str | None, eroded: bool) -> None:  # fmt: skip
    """Build a catalog of the dataset in DIRECTORY laid out as LAYOUT.

    Layouts: landcoverai, gamus, vaihingen, potsdam, isaid, pattern.
    """
    from geoseg.catalog.layouts import LAYOUTS, build_catalog

    if layout not in LAYOUTS:
        raise ConfigError(f"unknown layout {layout!r}; use one of {', '.join(sorted(LAYOUTS))}")
    opts: dict = {}
    pattern_opts = {"images": images, "labels": labels, "match": match, "id": id_template}
    if layout == "pattern":
        opts = {k: v for k, v in pattern_opts.items() if v is not None}
        if modality:
            opts["modalities"] = _pairs(modality, "--modality")
        if roles:
            opts["roles"] = [r.strip() for r in roles.split(",") if r.strip()]
    else:
        given = [f"--{k}" for k, v in pattern_opts.items() if v is not None]
        given += ["--modality"] * bool(modality) + ["--roles"] * bool(roles)
        if given:
            raise ConfigError(f"{given[0]} applies to the pattern layout only; drop it or use "
                              "`geoseg catalog build pattern`")  # fmt: skip
    if product is not None:
        _only(layout, "--product", {"potsdam"})
        opts["product"] = product
    if eroded:
        _only(layout, "--eroded", {"vaihingen", "potsdam"})
        opts["eroded"] = True
    result = build_catalog(layout, directory, **opts)
    _write(result.catalog, Path(output))
    n = len(result.catalog)
    labelled = sum(1 for s in result.catalog.scenes if s.labels)
    click.echo(f"wrote {output}: {n} scene(s), {labelled} with labels")
    for note in result.notes[:20]:
        click.echo(f"  note: {note}", err=True)
    if len(result.notes) > 20:
        click.echo(f"  ... and {len(result.notes) - 20} more note(s)", err=True)


@catalog_group.command("convert")
@click.argument("catalog")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help=".yaml for a geoseg catalog, .json for a STAC ItemCollection.")
@allow_outside_option
def convert_cmd(catalog: str, output: str, allow_outside: bool | None) -> None:
    """Convert CATALOG between YAML and STAC (paths rewritten relative to OUTPUT)."""
    from geoseg.catalog.loader import load_catalog

    cat = load_catalog(catalog, allow_outside or None)
    _write(cat, Path(output))
    click.echo(f"wrote {output}: {len(cat)} scene(s)")


@click.command("run")
@click.argument("pipeline")
@click.option("--workdir", default=None, type=click.Path(file_okay=False),
              help="Outputs root (default: the pipeline's workdir, else ./results/<name>).")
@click.option("--step", "steps", multiple=True, help="Run only this step (repeatable).")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@allow_outside_option
def run_cmd(pipeline: str, workdir: str | None, steps: tuple[str, ...], no_progress: bool,
            allow_outside: bool | None) -> None:  # fmt: skip
    """Run the steps of a PIPELINE file. Exit code 1 when some scenes failed."""
    from geoseg.catalog.paths import outside_paths_allowed
    from geoseg.pipeline.pipeline import Pipeline

    pipe = Pipeline.load(pipeline)
    with outside_paths_allowed(allow_outside or None):
        result = pipe.run(workdir=workdir, only=list(steps) or None,
                          progress=False if no_progress else None, echo=click.echo)  # fmt: skip
    if not result.ok:
        failed = [n for n, o in result.outcomes.items() if not o.ok]
        click.echo(f"geoseg: step(s) {', '.join(failed)} finished with failures; see the batch "
                   "report; re-run the same command to retry only what is missing", err=True)
        # sys.exit, not ctx.exit: geoseg.cli.main.main drops the return value of standalone_mode=False
        sys.exit(1)


def _write(catalog, path: Path) -> None:
    if path.suffix.lower() == ".json":
        from geoseg.catalog.stac_export import write_stac

        write_stac(catalog, path)
    elif path.suffix.lower() in (".yaml", ".yml"):
        catalog.to_yaml(path)
    else:
        raise ConfigError(f"{path}: unknown catalog format {path.suffix!r}; use .yaml or .json")


def _only(layout: str, option: str, layouts: set[str]) -> None:
    if layout not in layouts:
        raise ConfigError(f"{option} applies to the {'/'.join(sorted(layouts))} layout(s) only")


def _pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    return parse_pairs(values, what, example="dem=dem/{stem}.tif")
