"""The predict flags are generated from PredictOptions; library errors show their flags."""

from __future__ import annotations

from pathlib import Path

import click

from geoseg.cli.options import cli_message, options_from, predict_options
from geoseg.errors import InputError
from geoseg.runs.options import PredictOptions
from tests.support import RGB, invoke


def test_every_predict_option_is_a_flag_with_the_model_default() -> None:
    @click.command()
    @predict_options()
    def cmd(**kw: object) -> None:
        click.echo(options_from(kw).model_dump_json())

    names = {p.name for p in cmd.params}
    assert names == set(PredictOptions.model_fields)
    res = click.testing.CliRunner().invoke(cmd, [])
    assert PredictOptions.model_validate_json(res.output) == PredictOptions()
    res = click.testing.CliRunner().invoke(cmd, ["--tile", "256", "--bands", "3,2,1", "--no-confidence",
                                                 "--modality-bands", "dem=1", "--vector", "none"])
    opts = PredictOptions.model_validate_json(res.output)
    assert (opts.tile, list(opts.bands), opts.confidence, opts.vector) == (256, [3, 2, 1], False, "none")
    assert {k: list(v) for k, v in opts.modality_bands.items()} == {"dem": [1]}


def test_parameters_in_library_errors_are_shown_as_flags() -> None:
    assert cli_message(InputError("tile=8 is too small; use at least 16 pixels")) == (
        "--tile 8 is too small; use at least 16 pixels")
    msg = cli_message(InputError("x.tif: 'dem' has 2 band(s); select them with modality_bands=dem=1"))
    assert msg.endswith("select them with --modality-bands dem=1")
    assert cli_message(InputError("a/tile=3/b.tif: not found")) == "a/tile=3/b.tif: not found"


def test_the_cli_names_the_flag_of_a_bad_option(tmp_path: Path, unet_rgb: Path) -> None:
    code, _, err = invoke("predict", RGB, "--model", unet_rgb, "--out", tmp_path, "--tile", "8",
                          "--no-progress")
    assert code == 2 and "--tile 8 is too small" in err


def test_model_list_reads_the_registry_without_importing_it() -> None:
    from geoseg.cli.model import builtin_models
    from geoseg.models import get_model_class, list_models

    # other tests register models of their own: compare geoseg's
    expected = {n: (get_model_class(n).__doc__ or "").strip().splitlines()[0] for n in list_models()
                if get_model_class(n).__module__.startswith("geoseg.models.")}
    assert builtin_models() == expected
