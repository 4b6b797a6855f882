"""``geoseg weights list|fetch``: the torchgeo encoder weights geoseg loads, and their cache.

torchgeo is imported only when one of these commands runs.
"""

from __future__ import annotations

import click


@click.group("weights")
def weights() -> None:
    """Pretrained encoder weights from torchgeo (encoder_weights: torchgeo:NAME)."""


@weights.command("list")
@click.option("--cached", is_flag=True, help="Only the weights whose file is in the cache.")
def weights_list(cached: bool) -> None:
    """The torchgeo ResNet weights geoseg can load, their bands (as roles) and licence;
    '*' marks a file present in the cache."""
    from geoseg.models.torchgeo_weights import cache_dir, list_weights

    click.echo(f"cache: {cache_dir()}  (GEOSEG_WEIGHTS_DIR sets it)")
    for w in list_weights():
        here = w.path.is_file()
        if cached and not here:
            continue
        click.echo(f"{'*' if here else ' '} {w.name:58s} {w.model:9s} {len(w.bands):2d} bands "
                   f"{','.join(w.roles)}  [{w.licence}]")  # fmt: skip


@weights.command("fetch")
@click.argument("names", nargs=-1, required=True)
def weights_fetch(names: tuple[str, ...]) -> None:
    """Download torchgeo weights NAMES (e.g. torchgeo:ResNet50_Weights.SENTINEL2_ALL_MOCO) into
    the cache; needs network."""
    from geoseg.models.torchgeo_weights import fetch

    for name in names:
        full = name if name.startswith("torchgeo:") else f"torchgeo:{name}"
        click.echo(f"{full}: {fetch(full)}")
