"""`qupath-rkd predict` end to end: files written, skipped when done, failures isolated,
and `evaluate` reading what `predict` wrote."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from qupath_rkd.cli import cli
from qupath_rkd.heatmap import Heatmap
from qupath_rkd.outputs import SlideOutputs
from qupath_rkd.qupath.geojson import read_geojson

from .conftest import median_threshold


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def predicted(tmp_path_factory, model_path, semireal, model, real_data):
    """One predict run over a good slide, a blank slide and an unreadable file."""
    from qupath_rkd.inference import predict_slide

    folder = tmp_path_factory.mktemp("predict")
    blank = folder / "blank.tif"
    from qupath_rkd.demo import build_semireal_slide, demo_patch_dirs

    normal, tumour = demo_patch_dirs()
    build_semireal_slide(
        blank,
        normal_dir=normal,
        tumor_dir=tumour,
        width_px=640,
        height_px=480,
        tissue_fraction=0.0,
        max_patches=10,
    )
    broken = folder / "kidney-48-5.tif"
    shutil.copy(real_data / "slides" / "kidney-48-5.tif", broken)  # OpenSlide refuses it
    first = predict_slide(semireal.path, model, num_workers=0)
    thr = median_threshold(first.tiles.probability)
    out = folder / "out"
    args = [
        "predict",
        str(model_path),
        str(semireal.path),
        str(blank),
        str(broken),
        "--out",
        str(out),
        "--threshold",
        f"{thr:.6f}",
        "--min-lesion-um",
        "0",
        "--workers",
        "0",
    ]
    result = run(*args)
    return {
        "out": out,
        "result": result,
        "args": args,
        "thr": thr,
        "slide": semireal,
        "first": first,
    }


def test_a_failed_slide_is_reported_and_the_others_go_on(predicted) -> None:
    res = predicted["result"]
    assert res.exit_code == 1
    assert "kidney-48-5.tif" in res.output and "Traceback" not in res.output
    assert "2 of 3 slide(s) predicted" in res.output
    rows = {r["slide"]: r for r in csv.DictReader((predicted["out"] / "slide_scores.csv").open())}
    assert set(rows) == {"semireal_a", "blank", "kidney-48-5"}
    assert rows["kidney-48-5"]["score"] == "" and rows["kidney-48-5"]["note"].startswith("failed")
    # regression: a slide with no tissue scored 0, which reads as "benign"
    assert rows["blank"]["score"] == "" and "no tissue found" in rows["blank"]["note"]
    assert "blank: score -, 0 tiles" in res.output and "no tissue found" in res.output
    # default slide score: the highest value of the smoothed heatmap (default sigma, in µm)
    from qupath_rkd.constants import DEFAULT_SMOOTH_SIGMA_UM
    from qupath_rkd.lesions.postprocess import smooth_heatmap

    smoothed = smooth_heatmap(predicted["first"].heatmap, DEFAULT_SMOOTH_SIGMA_UM)
    want = float(np.nanmax(smoothed.probability))
    assert float(rows["semireal_a"]["score"]) == pytest.approx(want, rel=1e-5)


def test_off_a_terminal_progress_is_one_line_per_task_on_stderr(predicted) -> None:
    """Not a terminal (as here): each task writes its end line (and one every 10 s) to stderr,
    with the tiles/s; stdout keeps only the results."""
    res = predicted["result"]
    n = len(predicted["first"].tiles)
    tiles = [line for line in res.stderr.splitlines() if line.startswith("tiles semireal_a.tif:")]
    assert len(tiles) == 1 and tiles[0].startswith(f"tiles semireal_a.tif: {n}/{n} tiles (100%), ")
    assert " tile/s, done in " in tiles[0]
    assert any(line.startswith("slides: 3/3 slides (100%)") for line in res.stderr.splitlines())
    assert "tiles semireal_a" not in res.stdout and "\r" not in res.stderr


def test_outputs_of_a_slide(predicted) -> None:
    out, first = predicted["out"], predicted["first"]
    o = SlideOutputs(out, "semireal_a")
    # heatmap files round-trip and hold the calibrated probabilities
    hm = Heatmap.load(o.heatmap_json)
    np.testing.assert_allclose(hm.probability, first.heatmap.probability, rtol=1e-6, equal_nan=True)
    assert hm.meta["model_id"] == first.model_id and hm.mpp == pytest.approx(first.slide_mpp)
    # lesions as QuPath detections: one per lesion (a lesion in parts is one MultiPolygon)
    lesions = read_geojson(o.lesions_geojson)
    assert lesions and all(
        obj.object_type == "detection" and obj.class_name == "Tumor" for obj in lesions
    )
    assert all(obj.is_tool_object for obj in lesions)
    assert len({obj.name for obj in lesions}) == len(lesions)
    # Camelyon16 CSV: the candidate list, highest first (test_camelyon16_csv_is_the_candidate_list)
    lines = o.submission_csv.read_text().splitlines()
    probs = [float(line.split(",")[0]) for line in lines]
    assert probs == sorted(probs, reverse=True) and len(lines) >= len(lesions)
    for line in lines:
        _p, x, y = line.split(",")
        assert x.isdigit() and y.isdigit()  # integers, as the organisers' reader expects
    # tiles: one QuPath tile per scored tile with the probability measurement
    tiles = read_geojson(o.tiles_geojson)
    assert len(tiles) == len(first.tiles)
    probs_geo = np.array([t.measurements["Tumor probability"] for t in tiles])
    np.testing.assert_allclose(np.sort(probs_geo), np.sort(first.tiles.probability), rtol=1e-5)
    minx, _, maxx, _ = tiles[0].geometry.bounds
    assert maxx - minx == pytest.approx(first.heatmap.stride_level0_px, abs=0.01)
    rows = list(csv.DictReader(o.tiles_csv.open()))
    assert len(rows) == len(first.tiles)
    # PNG overlay: thumbnail + colour bar
    with Image.open(o.heatmap_png) as img:
        assert img.format == "PNG" and img.width > 110
    done = json.loads(o.done_json.read_text())
    assert done["n_tiles"] == len(first.tiles) and done["model_id"] == first.model_id
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["model_id"] == first.model_id and "torch" in run_json


def test_camelyon16_csv_is_the_candidate_list(tmp_path, semireal, model) -> None:
    """The CSV holds every lesion's peak once and, beyond them, the heatmap's other local
    maxima (inside the lesions too) at their own probability (the FROC's candidates), none
    within the NMS radius of a higher one. The model's calibration puts 0.5 at this slide's
    90th percentile score, so that lesions and sub-threshold maxima both exist."""

    from qupath_rkd.constants import DEFAULT_CANDIDATE_FLOOR, DEFAULT_CANDIDATE_NMS_UM
    from qupath_rkd.inference import predict_slide

    from .conftest import INPUT_PX, make_checkpoint

    # the grid without overlap and no smoothing: the fixture's lesions and maxima lie apart
    scores = predict_slide(semireal.path, model, num_workers=0, stride_px=INPUT_PX).tiles.score
    a = 3.0 / float(np.std(scores))
    checkpoint = make_checkpoint(
        tmp_path / "spread.pt", calibration=(a, -a * float(np.percentile(scores, 90)))
    )
    out = tmp_path / "out"
    args = ["predict", str(checkpoint), str(semireal.path), "--out", str(out)]
    res = run(
        *args,
        "--min-lesion-um",
        "0",
        "--smooth-um",
        "0",
        "--stride-px",
        str(INPUT_PX),
        "--workers",
        "0",
    )
    assert res.exit_code == 0, res.output
    thr = json.loads((out / "run.json").read_text())["operating_point"]["threshold"]
    o = SlideOutputs(out, "semireal_a")
    hm = Heatmap.load(o.heatmap_json)  # not smoothed (sigma 0 asked): the lesions' own grid
    lesions = read_geojson(o.lesions_geojson)
    assert lesions
    rows = [
        (float(p), int(x), int(y))
        for p, x, y in (line.split(",") for line in o.submission_csv.read_text().splitlines())
    ]
    peaks = {
        (round(obj.measurements["Peak x px"]), round(obj.measurements["Peak y px"])): (
            obj.measurements["Tumor probability (max)"]
        )
        for obj in lesions
    }
    at_peaks = {(x, y): p for p, x, y in rows if (x, y) in peaks}
    assert at_peaks.keys() == peaks.keys() and len(peaks) == len(lesions)
    for xy, p in at_peaks.items():
        assert p == pytest.approx(peaks[xy], abs=1e-6)
        assert p >= thr - 1e-6  # the lesions were found at the operating point
    # the other local maxima (inside the lesions too), by brute force over the cells
    prob = hm.probability
    maxima: dict[tuple[int, int], float] = {}
    for r, c in np.argwhere(np.isfinite(prob)):
        v = float(prob[r, c])
        around = prob[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2]
        if v >= DEFAULT_CANDIDATE_FLOOR and v >= np.nanmax(around):
            x, y = (float(a) for a in hm.to_level0_xy(r, c))
            if (round(x), round(y)) not in peaks:
                maxima[(round(x), round(y))] = v
    assert maxima, "the fixture has no maximum besides the peaks: the test would check nothing"
    # the CSV holds more than the lesion peaks, and the others are such maxima, each at its own
    # probability (the seed plays no part)
    others = [(p, x, y) for p, x, y in rows if (x, y) not in peaks]
    assert others and len(rows) > len(lesions), "no candidate beyond the lesion peaks"
    for p, x, y in others:
        assert p == pytest.approx(maxima[(x, y)], abs=1e-6)
    assert [p for p, _x, _y in rows] == sorted((p for p, _x, _y in rows), reverse=True)
    # non-maximum suppression: no candidate within the radius of a higher kept one
    radius_px = DEFAULT_CANDIDATE_NMS_UM / hm.mpp
    kept = sorted(rows, reverse=True)
    for i, (_p, x, y) in enumerate(kept):
        if (x, y) in peaks:
            continue
        assert all(np.hypot(x - x2, y - y2) > radius_px - 1 for _q, x2, y2 in kept[:i])
    # the highest sub-threshold maximum is submitted unless a lesion peak is within the radius
    best = max(maxima, key=lambda k: maxima[k])
    near = any(np.hypot(best[0] - px, best[1] - py) <= radius_px + 1 for px, py in peaks)
    assert near or best in {(x, y) for _p, x, y in others}
    # done.json records what the CSV holds
    from qupath_rkd.inference.write import SUBMISSION_RECORD

    assert json.loads(o.done_json.read_text())["camelyon16_submission"] == SUBMISSION_RECORD


def test_second_run_skips_finished_slides_and_a_new_setting_reruns(predicted) -> None:
    out = predicted["out"]
    o = SlideOutputs(out, "semireal_a")
    before = o.done_json.read_text()
    res = run(*predicted["args"])
    assert "skipped  semireal_a" in res.output and "skipped  blank" in res.output
    assert "FAILED" in res.output  # the unreadable file is tried again and fails again
    assert o.done_json.read_text() == before
    args = [a for a in predicted["args"] if a != str(out.parent / "kidney-48-5.tif")]
    k = args.index("--threshold")
    args[k + 1] = f"{min(predicted['thr'] + 0.001, 1.0):.6f}"
    res = run(*args)
    assert res.exit_code == 0, res.output
    assert "done     semireal_a" in res.output
    assert o.done_json.read_text() != before


def test_outputs_with_the_old_candidate_list_are_predicted_again(predicted) -> None:
    """A slide whose done.json records the candidate list written before 2026-12-08 (maxima
    outside the lesions only, clamped below the seed) is predicted again, not skipped."""
    out = predicted["out"]
    o = SlideOutputs(out, "semireal_a")
    args = [a for a in predicted["args"] if a != str(out.parent / "kidney-48-5.tif")]
    assert run(*args).exit_code == 0  # every slide done with these settings (other tests vary them)
    done = json.loads(o.done_json.read_text())
    done["camelyon16_submission"] = {
        "content": "candidates: lesion peaks + local maxima outside the lesions, below the seed",
        "floor": 0.05,
        "nms_radius_um": 187.0,
        "max_candidates": 1000,
    }
    o.done_json.write_text(json.dumps(done))
    res = run(*args)
    assert res.exit_code == 0, res.output
    assert "done     semireal_a" in res.output and "skipped  blank" in res.output
    from qupath_rkd.inference.write import SUBMISSION_RECORD

    assert json.loads(o.done_json.read_text())["camelyon16_submission"] == SUBMISSION_RECORD


def test_evaluate_reads_predict_outputs(predicted, tmp_path) -> None:
    out, slide = predicted["out"], predicted["slide"]
    truth = tmp_path / "truth"
    truth.mkdir()
    (truth / "semireal_a.geojson").write_text(json.dumps(slide.lesions_geojson()))
    (truth / "blank.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    (out / "camelyon16" / "kidney-48-5.csv").unlink(missing_ok=True)
    res = CliRunner().invoke(
        cli, ["evaluate", "--truth", str(truth), "--pred", str(out), "--out", str(tmp_path / "ev")]
    )
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert summary["n_slides"] == 2 and summary["n_lesions"] == 1
    assert 0.0 <= summary["froc_score"] <= 1.0
    # the only tumour slide scores above the blank one (no score: its empty submission's 0)
    assert summary["slide_auc"] == pytest.approx(1.0)


def test_model_without_mpp_needs_mpp(tmp_path, semireal) -> None:
    from .conftest import make_checkpoint

    ckpt = make_checkpoint(tmp_path / "nompp.pt", mpp=None)
    res = CliRunner().invoke(
        cli,
        ["predict", str(ckpt), str(semireal.path), "--out", str(tmp_path / "o"), "--workers", "0"],
    )
    assert res.exit_code == 1
    assert "records no µm/px" in res.output and "--tile-mpp" in res.output
    assert "Traceback" not in res.output


def test_a_slide_breaking_mid_way_fails_alone(tmp_path, semireal, blank_slide, model) -> None:
    """The file is cut short while its tiles are being read by two workers: that slide is
    reported with a one-line reason, the next slide is still predicted."""
    import os

    from qupath_rkd.inference import InferenceConfig, predict_slides

    victim = tmp_path / "victim.tif"
    shutil.copy(semireal.path, victim)

    def progress(event) -> None:
        if event.task == f"tiles {victim.name}" and event.done >= 8:
            os.truncate(victim, 50_000)

    cfg = InferenceConfig(num_workers=2, batch_size=8)
    runs = predict_slides(
        [victim, blank_slide],
        model,
        tmp_path / "out",
        config=cfg,
        progress=progress,
    )
    assert [r.status for r in runs] == ["failed", "ok"]
    assert "victim.tif: reading the tile at" in runs[0].error
    assert "Traceback" not in runs[0].error and "\n" not in runs[0].error
    assert runs[1].note and "no tissue" in runs[1].note


def test_real_svs_without_pixel_size_needs_slide_mpp(tmp_path, model_path, real_data) -> None:
    """A real Aperio slide whose metadata has no µm/px: that slide fails with the flag to use;
    with --slide-mpp it is predicted."""
    svs = real_data / "slides" / "tcga-cr-7395-01a-01-ts1.svs"
    out = tmp_path / "out"
    res = CliRunner().invoke(
        cli, ["predict", str(model_path), str(svs), "--out", str(out), "--workers", "0"]
    )
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "--slide-mpp" in res.output
    # 0.25 µm/px (40x, a guess for the test; the model reads at 1.944 µm/px)
    res = CliRunner().invoke(
        cli,
        [
            "predict",
            str(model_path),
            str(svs),
            "--out",
            str(out),
            "--workers",
            "0",
            "--slide-mpp",
            "0.25",
            "--min-tissue",
            "0.9",
        ],
    )
    assert res.exit_code == 0, res.output
    done = json.loads(SlideOutputs(out, "tcga-cr-7395-01a-01-ts1").done_json.read_text())
    assert done["slide_mpp"] == 0.25 and done["n_tiles"] > 0
    assert done["slide_size_px"] == [4443, 3567]
