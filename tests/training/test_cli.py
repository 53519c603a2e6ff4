"""`qupath-rkd train-patches` and `score-patches` on real PatchCamelyon patches, as written."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from qupath_rkd.cli import cli


def run(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def one_line_error(result) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output


@pytest.fixture(scope="module")
def trained(pcam_small, tmp_path_factory):
    """A model trained through the CLI (1 epoch, 32 px), with a broken file among the normals."""
    root = tmp_path_factory.mktemp("cli")
    normal = root / "normal"
    shutil.copytree(pcam_small["train_normal"], normal)
    (normal / "broken.png").write_bytes(b"\x89PNG not really")
    out = root / "model.pt"
    torch.set_num_threads(1)
    result = run(
        "train-patches",
        "--normal",
        normal,
        "--tumor",
        pcam_small["train_tumor"],
        "--valid-normal",
        pcam_small["valid_normal"],
        "--valid-tumor",
        pcam_small["valid_tumor"],
        "--out",
        out,
        "--input-px",
        32,
        "--epochs",
        1,
        "--batch-size",
        8,
        "--patch-mpp",
        0.972,
        "--seed",
        1,
        "--device",
        "cpu",
        "--workers",
        0,
        "--no-balance",  # one epoch then reads every training patch, the broken one included
    )
    return root, out, result


def test_train_patches_writes_a_model_and_reports_skips(trained) -> None:
    _, out, result = trained
    assert result.exit_code == 0, result.output
    assert out.is_file()
    assert "Wrote" in result.output and "validation AUROC" in result.output
    assert "Warning: 1 unreadable" in result.output
    # 23 normal patches cannot fill a fold's mosaic: predict will use the calibrated threshold
    assert "Warning: too few normal patches" in result.output
    assert "Traceback" not in result.output


def test_score_patches_on_new_patches_of_other_sizes_and_formats(trained, pcam_small) -> None:
    root, model, _ = trained
    new = root / "new" / "nested"
    new.mkdir(parents=True)
    # patches no project file contains: re-encoded as PNG at 128 px, TIFF at 64 px, RGBA PNG
    srcs = sorted(pcam_small["valid_tumor"].glob("*.jpg"))[:3]
    for i, src in enumerate(srcs):
        im = Image.open(src).convert("RGB")
        im.resize((128, 128)).save(new / f"p{i}.png")
        im.resize((64, 64)).save(new / f"p{i}.tif")
    Image.open(srcs[0]).convert("RGBA").save(new / "rgba.PNG")
    (new / "broken.jpg").write_bytes(b"\xff\xd8 nope")
    (new / "notes.txt").write_text("not an image")
    out = root / "scores.csv"
    result = run(
        "score-patches",
        model,
        root / "new",
        pcam_small["valid_normal"],
        "--out",
        out,
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    assert "1 unreadable" in result.output
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["path", "score", "probability"]
    assert len(rows) == 7 + 12
    scores = np.array([float(r["score"]) for r in rows])
    probs = np.array([float(r["probability"]) for r in rows])
    assert np.isfinite(scores).all() and ((probs >= 0) & (probs <= 1)).all()
    assert {r["path"] for r in rows} >= {
        str(new / "p0.png"),
        str(new / "p0.tif"),
        str(new / "rgba.PNG"),
    }


def test_train_patches_without_mpp_says_so(pcam_small, tmp_path) -> None:
    result = run(
        "train-patches",
        "--normal",
        pcam_small["train_normal"],
        "--out",
        tmp_path / "m.pt",
        "--input-px",
        32,
        "--epochs",
        1,
        "--batch-size",
        8,
        "--device",
        "cpu",
        "--workers",
        0,
    )
    assert result.exit_code == 0, result.output
    assert "no --patch-mpp" in result.output and "no validation set" in result.output
    # normal patches only: the one-class texture model, calibrated on held-out normals
    assert "Wrote" in result.output and "one-class texture model" in result.output
    assert "held-out normal training patches" in result.output


def test_empty_folder_is_a_one_line_error(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    one_line_error(run("train-patches", "--normal", tmp_path / "empty", "--out", tmp_path / "m.pt"))
    one_line_error(
        run("train-patches", "--normal", tmp_path / "missing", "--out", tmp_path / "m.pt")
    )


def test_scoring_an_empty_folder_or_with_a_bad_model_is_a_one_line_error(trained, tmp_path) -> None:
    _, model, _ = trained
    (tmp_path / "empty").mkdir()
    one_line_error(run("score-patches", model, tmp_path / "empty", "--out", tmp_path / "s.csv"))
    (tmp_path / "bad.pt").write_text("hello")
    one_line_error(
        run("score-patches", tmp_path / "bad.pt", tmp_path / "empty", "--out", tmp_path / "s.csv")
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_device_cuda_without_cuda_is_a_one_line_error(pcam_small, tmp_path) -> None:
    result = run(
        "train-patches",
        "--normal",
        pcam_small["train_normal"],
        "--out",
        tmp_path / "m.pt",
        "--device",
        "cuda",
    )
    one_line_error(result)
    assert "CUDA is not available" in result.output
