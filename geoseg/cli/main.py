"""The ``geoseg`` command: the root group, logging, and errors as one line with exit code 2.

Each command group lives in its own module (predict, model, catalog, train) and is added
here; library errors (GeosegError) are shown with their parameters as flags.
"""

from __future__ import annotations

import logging
import sys

import click

from geoseg.cli import catalog, model, predict, train
from geoseg.cli.options import cli_message
from geoseg.errors import GeosegError


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)  # fmt: skip


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def cli(verbose: bool) -> None:
    """geoseg: semantic segmentation of huge GeoTIFFs."""
    _setup_logging(verbose)


for command in (predict.predict, predict.info, predict.export, model.model, catalog.catalog_group,
                catalog.run_cmd, train.train_cmd, train.evaluate_cmd):  # fmt: skip
    cli.add_command(command)


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
        click.echo(f"geoseg: error: {cli_message(exc)}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("geoseg: interrupted; re-run the same command to resume", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
