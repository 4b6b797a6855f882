"""``geoseg serve``: the segmentation service (HTTP API + web page), and ``geoseg serve token``
to create, list and revoke the users' bearer tokens (with or without a running server)."""

from __future__ import annotations

from pathlib import Path

import click

DATA_HELP = "data folder of the service (job store, uploads, outputs, tile stores)"


@click.group(invoke_without_command=True)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; other than loopback, put TLS in front.")
@click.option("--port", default=8000, show_default=True, type=int, help="TCP port.")
@click.option("--data", default="geoseg-data", show_default=True, type=click.Path(),
              help=DATA_HELP.capitalize() + ".")
@click.option("--models", default="models", show_default=True, type=click.Path(),
              help="Folder of model bundles (and .onnx files) the service offers.")
@click.option("--allow-root", "allow_roots", multiple=True, type=click.Path(exists=True,
              file_okay=False), help="Folder whose rasters users may register (repeatable).")
@click.option("--scheduler", default="local", show_default=True,
              help="local (a Dask LocalCluster of worker processes) or tcp://HOST:PORT.")
@click.option("--max-jobs", default=1, show_default=True, type=int,
              help="Jobs running at once; the others queue in submission order.")
@click.option("--workers", default=None, type=int,
              help="Worker processes of the local cluster (default 1, with a thread per core; "
              "N processes share the cores).")
@click.option("--tile-threads", default=2, show_default=True, type=int,
              help="Map tiles rendered at once (more: faster maps, less CPU for a running job).")
@click.option("--tile-nice", default=10, show_default=True, type=click.IntRange(0, 19),
              help="Render map tiles this much below the server's OS priority (Linux): a "
              "running job keeps its cores, the map waits while it runs (0: tiles first).")
@click.option("--max-upload-mb", default=2048.0, show_default=True, type=float,
              help="Largest accepted upload (MiB).")
@click.option("--max-pixels", default=2_000_000_000, show_default=True, type=int,
              help="Largest scene accepted (pixels).")
@click.option("--cors-origin", "cors_origins", multiple=True,
              help="Origin allowed by CORS (repeatable; default: CORS off).")
@click.pass_context
def serve(ctx: click.Context, **kw: object) -> None:
    """Start the segmentation service: API under /api/v1, web page at /."""
    if ctx.invoked_subcommand is not None:
        return
    from pydantic import ValidationError

    from geoseg.config import format_validation_error
    from geoseg.errors import ConfigError
    from geoseg.service.server import serve as run
    from geoseg.service.settings import ServiceSettings

    try:
        settings = ServiceSettings(**kw)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "geoseg serve", model=ServiceSettings,
                                                  data=kw)) from None  # fmt: skip
    run(settings)


@serve.group()
def token() -> None:
    """Bearer tokens of the service's users."""


def _store(data: str):
    from geoseg.service.store import open_store

    return open_store(Path(data).expanduser().resolve())


@token.command("create")
@click.argument("name")
@click.option("--data", default="geoseg-data", show_default=True, type=click.Path(), help=DATA_HELP)
def token_create(name: str, data: str) -> None:
    """Create user NAME if new, and print a new token for it (shown once, stored hashed)."""
    if not name or len(name) > 64 or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise click.BadParameter("letters, digits, '-', '_' and '.' only (at most 64)", param_hint="NAME")
    click.echo(_store(data).create_token(name))


@token.command("list")
@click.option("--data", default="geoseg-data", show_default=True, type=click.Path(), help=DATA_HELP)
def token_list(data: str) -> None:
    """List the users and how many tokens each has."""
    for u in _store(data).users():
        click.echo(f"{u['name']}\t{u['tokens']} token(s)")


@token.command("revoke")
@click.argument("name")
@click.option("--data", default="geoseg-data", show_default=True, type=click.Path(), help=DATA_HELP)
def token_revoke(name: str, data: str) -> None:
    """Revoke every token of user NAME."""
    n = _store(data).revoke_tokens(name)
    click.echo(f"revoked {n} token(s) of {name}")


@serve.group()
def scene() -> None:
    """Scenes registered by the operator (any local file, no allowed root needed)."""


@scene.command("add")
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option("--modality", multiple=True, help="Extra modality NAME=PATH (e.g. dsm=dsm.tif).")
@click.option("--user", "user_name", required=True, help="User who gets the scene.")
@click.option("--name", default=None, help="Scene name (default: the image's file name).")
@click.option("--data", default="geoseg-data", show_default=True, type=click.Path(), help=DATA_HELP)
def scene_add(image: str, modality: tuple[str, ...], user_name: str, name: str | None,
              data: str) -> None:  # fmt: skip
    """Register IMAGE (with --modality rasters) as a scene of user --user; prints its id."""
    from geoseg.cli.options import parse_pairs
    from geoseg.errors import InputError
    from geoseg.service.scenes import MAIN, describe_scene

    store = _store(data)
    user = store.user(user_name)
    if user is None:
        raise InputError(f"user {user_name!r}: no such user; create one with geoseg serve token "
                         f"create {user_name} --data {data}")  # fmt: skip
    mods = {MAIN: {"path": str(Path(image).resolve())}}
    mods.update({k: {"path": str(Path(v).resolve())}
                 for k, v in parse_pairs(modality, "--modality").items()})  # fmt: skip
    info = describe_scene(mods, 2**62)
    row = store.add_scene(user["id"], name or Path(image).stem, "path", mods, info)
    click.echo(row["id"])
