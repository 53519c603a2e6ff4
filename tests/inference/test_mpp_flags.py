"""Issue 11, point 5: one meaning per flag. ``--slide-mpp`` is a slide's level-0 µm/px in every
command, ``--tile-mpp`` predict's reading scale, ``--patch-mpp`` the patches' µm/px; the old
``--mpp`` still works where it did, hidden, with a one-line warning naming the new flag; reading
a model at a µm/px other than its own needs ``--allow-mpp-mismatch``."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from shapely.geometry import Polygon

from qupath_rkd.cli import cli
from qupath_rkd.cli.flags import check_tile_mpp, deprecated_alias
from qupath_rkd.outputs import SlideOutputs
from qupath_rkd.qupath.geojson import make_feature, write_geojson

from .conftest import MODEL_MPP


def _invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, [str(a) for a in args])


def _warnings(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Warning:")]


@pytest.mark.parametrize(
    ("command", "new"),
    [
        ("slide-info", "--slide-mpp"),
        ("evaluate", "--slide-mpp"),
        ("predict", "--slide-mpp"),
        ("predict", "--tile-mpp"),
        ("train-patches", "--patch-mpp"),
        ("sync", "--slide-mpp"),
    ],
)
def test_help_shows_the_new_flags_and_never_mpp(command: str, new: str) -> None:
    res = _invoke(command, "--help")
    assert res.exit_code == 0, res.output
    assert new in res.output
    assert "--mpp" not in res.output  # the deprecated spelling is hidden


def test_deprecated_alias_sets_the_new_parameter_and_warns_once() -> None:
    seen: dict[str, float | None] = {}

    @click.command()
    @click.option("--slide-mpp", type=float, default=None)
    @deprecated_alias("--mpp", "--slide-mpp", "slide_mpp")
    def cmd(slide_mpp: float | None) -> None:
        seen["value"] = slide_mpp

    res = CliRunner().invoke(cmd, ["--mpp", "0.5"])
    assert res.exit_code == 0 and seen["value"] == 0.5
    assert _warnings(res.output) == [
        "Warning: --mpp is deprecated here; use --slide-mpp (same value)."
    ]
    res = CliRunner().invoke(cmd, ["--slide-mpp", "0.5"])
    assert res.exit_code == 0 and not _warnings(res.output)
    res = CliRunner().invoke(cmd, ["--mpp", "0.5", "--slide-mpp", "0.25"])
    assert res.exit_code == 2 and "disagree" in res.output


def test_slide_info_takes_slide_mpp_and_the_old_mpp(real_data: Path) -> None:
    svs = real_data / "slides" / "tcga-cr-7395-01a-01-ts1.svs"  # no µm/px in its metadata
    res = _invoke("slide-info", svs, "--slide-mpp", "0.25")
    assert res.exit_code == 0 and "0.25 (override)" in res.output and not _warnings(res.output)
    res = _invoke("slide-info", svs, "--mpp", "0.25")
    assert res.exit_code == 0 and "0.25 (override)" in res.output
    assert len(_warnings(res.output)) == 1 and "--slide-mpp" in _warnings(res.output)[0]


def test_train_patches_old_mpp_warns_with_patch_mpp(tmp_path: Path) -> None:
    res = _invoke(
        "train-patches", "--normal", tmp_path, "--mpp", "0.972", "--out", tmp_path / "no" / "m.pt"
    )
    assert res.exit_code == 2  # the missing --out folder, after the warning
    assert any("--patch-mpp" in w for w in _warnings(res.output)), res.output


def test_predict_refuses_another_tile_mpp_without_the_flag(model_path, semireal, tmp_path):
    """Regression: ``predict MODEL slide --mpp 0.25`` silently read a model trained at
    0.972 µm/px at 0.25 µm/px (16x the tiles) with no warning."""
    out = tmp_path / "out"
    res = _invoke(
        "predict", model_path, semireal.path, "--out", out, "--tile-mpp", "0.972", "--workers", "0"
    )
    assert res.exit_code == 2 and "Traceback" not in res.output
    errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, res.output
    assert "--allow-mpp-mismatch" in errors[0] and f"{MODEL_MPP:g} µm/px" in errors[0]
    assert "0.972" in errors[0]
    assert not out.exists()  # nothing predicted


def test_the_models_own_mpp_within_one_percent_needs_no_flag(capsys) -> None:
    check_tile_mpp(Path("m.pt"), MODEL_MPP, MODEL_MPP * 1.009, allow=False)
    check_tile_mpp(Path("m.pt"), MODEL_MPP, None, allow=False)  # the model's own
    check_tile_mpp(Path("m.pt"), None, 0.5, allow=False)  # a model without µm/px: any
    assert capsys.readouterr().err == ""
    with pytest.raises(click.UsageError, match="--allow-mpp-mismatch"):
        check_tile_mpp(Path("m.pt"), MODEL_MPP, MODEL_MPP * 1.02, allow=False)


def test_predict_old_mpp_and_allowed_mismatch_warn_and_read_at_that_mpp(
    model_path, semireal, tmp_path
) -> None:
    out = tmp_path / "out"
    res = _invoke(
        "predict",
        model_path,
        semireal.path,
        "--out",
        out,
        "--mpp",
        "3.888",
        "--allow-mpp-mismatch",
        "--workers",
        "0",
    )
    assert res.exit_code == 0, res.output
    warnings = _warnings(res.output)
    assert len(warnings) == 2, res.output
    assert "--mpp is deprecated" in warnings[0] and "--tile-mpp" in warnings[0]
    assert "trained at 1.944 µm/px" in warnings[1] and "--allow-mpp-mismatch" in warnings[1]
    done = json.loads(SlideOutputs(out, "semireal_a").done_json.read_text())
    assert done["config"]["mpp"] == pytest.approx(3.888)


def test_unknown_slide_mpp_error_speaks_in_flags(model_path, real_data, tmp_path) -> None:
    """Regression: the error repeated the slide's path and named ``InferenceConfig.slide_mpp``."""
    svs = real_data / "slides" / "tcga-cr-7395-01a-01-ts1.svs"
    res = _invoke("predict", model_path, svs, "--out", tmp_path / "o", "--workers", "0")
    assert res.exit_code == 1
    failed = next(line for line in res.output.splitlines() if line.startswith("FAILED"))
    assert "pass --slide-mpp" in failed and "Config" not in failed and "slide_mpp" not in failed
    assert failed.count(svs.name) == 1, failed


def test_evaluate_takes_slide_mpp_and_the_old_mpp(tmp_path: Path) -> None:
    truth, pred = tmp_path / "truth", tmp_path / "pred"
    truth.mkdir()
    pred.mkdir()
    square = Polygon([(0, 0), (4000, 0), (4000, 4000), (0, 4000)])  # no µm/px implied
    write_geojson(
        truth / "s.geojson", [make_feature(square, object_type="annotation", class_name="Tumor")]
    )
    (pred / "s.csv").write_text("0.9,2000,2000\n0.2,9000,9000\n")
    res = _invoke("evaluate", "--truth", truth, "--pred", pred)
    assert res.exit_code == 1 and "pass --slide-mpp" in res.output
    for flag, n_warnings in (("--slide-mpp", 0), ("--mpp", 1)):
        res = _invoke("evaluate", "--truth", truth, "--pred", pred, flag, "0.5")
        assert res.exit_code == 0, res.output
        assert "FROC score: 1.0000" in res.output and len(_warnings(res.output)) == n_warnings
