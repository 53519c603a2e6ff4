"""Issue 9, point 4 of Deliver: the unknown-µm/px error of ``sync`` names only what ``sync``
accepts (``--slide-mpp``, ``[images] mpp`` in config.toml), and both work."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sync_helpers import FAST, SMALL_SLIDES, one_error_line, snapshot

from qupath_rkd.cli import cli
from qupath_rkd.errors import ConfigError
from qupath_rkd.sync.config import load_config, toml_value

NAMES = [spec.name for spec in SMALL_SLIDES]  # A, B: training slides; C, D: to predict
DEMO_MPP = 0.972


def _sync(*args: str) -> tuple[int, str]:
    fast = [arg for k, v in FAST.items() for arg in ("--set", f"{k}={v}")]
    result = CliRunner().invoke(cli, ["sync", *args, *fast])
    return result.exit_code, result.output


def _drop_calibration(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _drop_calibration(v) for k, v in obj.items() if k != "pixelCalibration"}
    if isinstance(obj, list):
        return [_drop_calibration(v) for v in obj]
    return obj


@pytest.fixture
def uncalibrated(synced_copy: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The synced demo as if neither QuPath nor the slide files knew the µm/px."""
    from qupath_rkd.slides import reader

    for path in [synced_copy / "project.qpproj", *(synced_copy / "data").glob("*/server.json")]:
        path.write_text(json.dumps(_drop_calibration(json.loads(path.read_text())), indent=2))
    monkeypatch.setattr(reader, "_mpp_from_properties", lambda props, *where: None)
    return synced_copy


def _config_mpp(project: Path, names: list[str]) -> None:
    table = toml_value(dict.fromkeys(names, DEMO_MPP))
    (project / "qupath-rkd" / "config.toml").write_text(f"[images]\nmpp = {table}\n")


def test_unknown_mpp_error_names_slide_mpp_and_it_works(uncalibrated: Path) -> None:
    """Unknown µm/px on a training slide: one line naming the image, ``--slide-mpp`` and
    ``[images] mpp`` (never ``--mpp``, which sync rejects), nothing written; then
    ``--slide-mpp`` for every image syncs."""
    root = uncalibrated.parent
    before = snapshot(root)
    code, out = _sync(str(uncalibrated))
    assert code == 1, out
    line = one_error_line(out)
    assert "--slide-mpp" in line and "[images] mpp" in line and "config.toml" in line
    assert "--mpp " not in line and repr(NAMES[0]) in line
    assert snapshot(root) == before

    flags = [arg for name in NAMES for arg in ("--slide-mpp", f"{name}={DEMO_MPP}")]
    code, out = _sync(str(uncalibrated), *flags)
    assert code == 0, out
    assert "4 slide(s) predicted, 0 failed" in out


def test_config_images_mpp_and_slide_mpp_add_up(uncalibrated: Path) -> None:
    """``[images] mpp`` for the training slides only (and another prediction setting, so
    that every slide is predicted again): training works, the two slides to predict fail,
    each naming the fix; ``--slide-mpp`` for them predicts just those two,
    without retraining."""
    _config_mpp(uncalibrated, NAMES[:2])
    other = ("--set", "inference.min_lesion_um=150")  # every slide is predicted again
    code, out = _sync(str(uncalibrated), *other)
    assert code == 1, out
    assert "trained a model" in out and "2 slide(s) predicted, 2 failed" in out
    report = json.loads((uncalibrated / "qupath-rkd" / "report.json").read_text())
    failed = {row["image_name"]: row["error"] for row in report["slides"] if "error" in row}
    assert sorted(failed) == NAMES[2:]
    for name, error in failed.items():
        assert f'--slide-mpp "{name}=0.25"' in error and "[images] mpp" in error

    flags = [arg for name in NAMES[2:] for arg in ("--slide-mpp", f"{name}={DEMO_MPP}")]
    code, out = _sync(str(uncalibrated), *other, *flags)
    assert code == 0, out
    assert "model up to date" in out and "2 slide(s) predicted, 0 failed" in out


def test_images_mpp_is_checked(tmp_path: Path) -> None:
    assert load_config(None, {"images.mpp": '{"a.svs" = 0.25}'}).get("images.mpp") == {
        "a.svs": 0.25
    }
    for bad in ('{"a.svs" = -1}', '{"a.svs" = "x"}', "0.25", '{"a.svs" = 1e9}'):
        with pytest.raises(ConfigError, match=r"images\.mpp"):
            load_config(None, {"images.mpp": bad})
    assert toml_value({}) == "{}"


def test_slide_mpp_for_an_unknown_image_or_badly_written(synced_copy: Path) -> None:
    root = synced_copy.parent
    before = snapshot(root)
    code, out = _sync(str(synced_copy), "--slide-mpp", "Nope.svs=0.25")
    assert code == 1, out
    line = one_error_line(out)
    assert "'Nope.svs'" in line and "names no image" in line and repr(NAMES[0]) in line
    code, out = _sync(str(synced_copy), "--slide-mpp", "0.25")
    assert code == 2 and "--slide-mpp" in out, out
    assert snapshot(root) == before
