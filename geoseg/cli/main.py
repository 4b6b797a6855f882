"""The ``geoseg`` command: the root group, logging, and errors as one line with exit code 2.

Each command group lives in its own module (predict, model, catalog, train) and is added
here; library errors (GeosegError) are shown with their parameters as flags.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
from collections.abc import Iterator

import click

from geoseg.cli import catalog, fields, model, predict, serve, train, weights
from geoseg.cli.options import cli_message
from geoseg.errors import GeosegError


class _Console(logging.Filter):
    """What the console shows: geoseg's INFO lines (its progress report), every library's
    warnings and errors; with ``-v`` everything, other libraries' INFO lines (numexpr's
    threads, pyogrio's record counts) and GDAL's messages at DEBUG included."""

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if self.verbose or record.levelno >= logging.WARNING:
            return True
        return record.levelno >= logging.INFO and record.name.split(".")[0] == "geoseg"


@contextlib.contextmanager
def _console_logging(verbose: bool) -> Iterator[None]:
    """Log lines on stderr for the command's duration (see ``_Console``), GDAL's messages at
    their level, Python warnings (pyogrio reports GDAL's warnings so) as log lines, and every
    line written through tqdm, so that it clears a progress bar and redraws it below instead
    of landing in the middle of it."""
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from geoseg.runtime import route_gdal_messages

    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_Console(verbose))
    level = root.level
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.addHandler(handler)
    route_gdal_messages()
    logging.captureWarnings(True)
    try:
        with logging_redirect_tqdm(tqdm_class=tqdm):
            yield
    finally:
        logging.captureWarnings(False)
        root.removeHandler(handler)
        root.setLevel(level)


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """geoseg: semantic segmentation of huge GeoTIFFs."""
    ctx.with_resource(_console_logging(verbose))


for command in (predict.predict, predict.info, predict.export, model.model, catalog.catalog_group,
                catalog.run_cmd, train.train_cmd, train.pretrain_cmd, train.evaluate_cmd, serve.serve,
                weights.weights, fields.fields_group, fields.indices_cmd):  # fmt: skip
    cli.add_command(command)


def main() -> None:
    """Entry point: GeosegError -> one line on stderr, exit code 2."""
    try:
        code = cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("geoseg: aborted", err=True)
        _exit(130)
    except click.ClickException as exc:
        exc.show()
        _exit(2)
    except GeosegError as exc:
        click.echo(f"geoseg: error: {cli_message(exc)}", err=True)
        _exit(2)
    except KeyboardInterrupt:
        click.echo("geoseg: interrupted; re-run the same command to resume", err=True)
        _exit(130)
    _exit(code if isinstance(code, int) else 0)


def _exit(code: int) -> None:
    """End the process without tearing the interpreter down module by module.

    The teardown of torch, torchvision and timm took 1.2-1.4 s after every command that ran a
    model (measured: ``import torch, torchvision, segmentation_models_pytorch`` then exit,
    4.7 s vs 3.5 s with this). Every output is closed and renamed before a command returns;
    the ``atexit`` hooks (logging, multiprocessing's children, Dask) still run here, and
    standard streams are flushed, so nothing but the teardown is skipped.
    """
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
