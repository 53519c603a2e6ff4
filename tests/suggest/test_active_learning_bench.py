"""benchmarks/active_learning.py (issue 13.3): the simulated pathologist's annotations (Tumor =
truth ∩ region, Normal = region − truth, existing annotations untouched, read by the label
reader as tumour and normal), and the whole simulation run tiny."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from bench_scripts import benchmark_module
from shapely.geometry import Point, box

from qupath_rkd.labels import ClassMapping
from qupath_rkd.qupath.geojson import (
    make_feature,
    parse_features,
    qupath_import_problems,
    stable_feature_id,
)
from qupath_rkd.sync.config import load_config

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "active_learning.py"


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    with benchmark_module(SCRIPT.name) as module:
        yield module


def _classes() -> tuple[str, str]:
    config = load_config(None, {})
    return str(config.get("classes.tumor")[0]), str(config.get("classes.normal")[0])


def test_oracle_cuts_the_truth_to_the_region(bench: ModuleType) -> None:
    region = box(0, 0, 400, 400)
    truth = Point(400, 200).buffer(150)  # half inside the region
    tumour, normal = bench.oracle_geometries(region, truth)
    assert tumour.area == pytest.approx(region.intersection(truth).area)
    assert tumour.area == pytest.approx(truth.area / 2, rel=1e-3)
    assert normal.intersection(truth).area == pytest.approx(0.0, abs=1e-6)
    assert tumour.union(normal).symmetric_difference(region).area == pytest.approx(0, abs=1e-6)
    # no tumour on the slide: the whole region is normal
    tumour, normal = bench.oracle_geometries(region, None)
    assert tumour.is_empty and normal.equals(region)


def test_oracle_features_are_labels_of_the_right_class(bench: ModuleType) -> None:
    tumor_class, normal_class = _classes()
    regions = [box(0, 0, 400, 400), box(1000, 1000, 1400, 1400)]
    truth = Point(400, 200).buffer(150)
    features, tumour_px2, normal_px2 = bench.oracle_features(
        regions, truth, tumor_class=tumor_class, normal_class=normal_class, key="k"
    )
    assert qupath_import_problems({"type": "FeatureCollection", "features": features}) == []
    objects = parse_features({"type": "FeatureCollection", "features": features}, source="t")
    assert [o.class_name for o in objects] == [tumor_class, normal_class, normal_class]
    assert all(o.is_annotation and not o.is_tool_object for o in objects)
    roles = ClassMapping.from_config(load_config(None, {}).section("classes"))
    assert [roles.role(o.class_name) for o in objects] == ["tumor", "normal", "normal"]
    assert tumour_px2 == pytest.approx(objects[0].geometry.area, rel=1e-4)  # rounded coords
    assert tumour_px2 + normal_px2 == pytest.approx(sum(r.area for r in regions))
    # the same key gives the same ids (a rerun writes the same file)
    again, _, _ = bench.oracle_features(
        regions, truth, tumor_class=tumor_class, normal_class=normal_class, key="k"
    )
    assert [f["id"] for f in again] == [f["id"] for f in features]


def test_append_never_touches_existing_annotations(bench: ModuleType, tmp_path: Path) -> None:
    export = tmp_path / "7.geojson"
    drawn = make_feature(
        Point(50, 50).buffer(30),
        object_type="annotation",
        class_name="Tumor",
        feature_id=stable_feature_id("hers", 1),
    )
    drawn["properties"]["isLocked"] = True  # whatever QuPath wrote stays as it was
    original = {"type": "FeatureCollection", "features": [drawn], "extra": {"kept": 1}}
    export.write_text(json.dumps(original), encoding="utf-8")
    manifest = tmp_path / "manifest.json"
    manifest.write_text(
        json.dumps({"images": [{"entry_id": "7", "annotations": "7.geojson", "n_annotations": 1}]})
    )
    features, _, _ = bench.oracle_features(
        [box(100, 100, 200, 200)], None, tumor_class="Tumor", normal_class="Normal", key="x"
    )
    bench.append_annotations(export, features)
    data = json.loads(export.read_text(encoding="utf-8"))
    assert data["features"][0] == original["features"][0]
    assert data["extra"] == {"kept": 1}
    assert data["features"][1:] == features
    assert json.loads(manifest.read_text())["images"][0]["n_annotations"] == 2


def test_average_precision_by_hand(bench: ModuleType) -> None:
    # ranks 1 and 3 are tumour: precision 1 at recall 1/2, 2/3 at recall 1
    labels, scores = np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.7, 0.1])
    assert bench.average_precision(labels, scores) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # a tie is one threshold: 0.9 holds one tumour and one normal (precision 1/2)
    tied = bench.average_precision(np.array([1, 0, 1]), np.array([0.9, 0.9, 0.5]))
    assert tied == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    assert bench.average_precision(np.array([0, 1, 1]), np.array([0.1, 0.8, 0.9])) == 1.0
    with pytest.raises(ValueError, match="positive"):
        bench.average_precision(np.array([0, 0]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="finite"):
        bench.average_precision(np.array([1, 0]), np.array([np.nan, 0.2]))


def test_average_precision_is_scikit_learns(bench: ModuleType) -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    scores = np.round(rng.random(500) + 0.3 * labels, 2)  # many ties
    assert bench.average_precision(labels, scores) == pytest.approx(
        metrics.average_precision_score(labels, scores), abs=1e-12
    )


def test_paired_comparison_counts_per_seed_and_round(bench: ModuleType) -> None:
    def row(strategy: str, seed: int, rnd: int, value: float | None) -> dict:
        return {"strategy": strategy, "seed": seed, "round": rnd, "tile_ap": value}

    rows = [
        row("a", 0, 0, 0.0),  # round 0 is shared: not a pair
        row("b", 0, 0, 1.0),
        row("a", 0, 1, 0.6),
        row("b", 0, 1, 0.5),
        row("a", 0, 2, 0.4),
        row("b", 0, 2, 0.5),
        row("a", 1, 1, 0.7),
        row("b", 1, 1, 0.7),
        row("a", 1, 2, 0.9),
        row("b", 1, 2, None),  # not measured: not a pair
    ]
    p = bench.paired(rows, "a", "b", "tile_ap")
    assert (p["pairs"], p["wins"], p["losses"], p["ties"]) == (3, 1, 1, 1)
    assert p["mean_diff"] == pytest.approx(0.0, abs=1e-9)
    assert p["per_seed_mean_diff"] == {"0": 0.0, "1": 0.0}
    assert bench.paired(rows, "a", "c", "tile_ap") is None
    summary = bench.summarise(rows, ["a", "b"])
    assert summary["paired"]["a vs b"]["tile_ap"] == p
    assert "wins / losses / ties" in bench.markdown(summary)


def test_merge_joins_runs_and_refuses_disagreeing_rows(bench: ModuleType, tmp_path: Path) -> None:
    def row(strategy: str, seed: int, rnd: int | None, value: float) -> dict:
        metrics = dict.fromkeys(bench.METRICS, value)
        return {"strategy": strategy, "seed": seed, "round": rnd, "area_mm2": 0.1, **metrics}

    def run(name: str, rows: list[dict]) -> Path:
        path = tmp_path / name / "results.json"
        path.parent.mkdir()
        path.write_text(json.dumps({"command": name, "rows": rows}), encoding="utf-8")
        return path

    # two processes, each with round 0 of the seed (the same numbers) and its own strategy
    a = run("a", [row("random", 5, 0, 0.5), row("random", 5, 1, 0.6)])
    b = run("b", [row("mixed", 5, 0, 0.5), row("mixed", 5, 1, 0.7), row("random", 5, 0, 0.5)])
    bench.merge([a, b], tmp_path / "merged")
    merged = json.loads((tmp_path / "merged" / "results.json").read_text(encoding="utf-8"))
    keys = [(r["strategy"], r["round"]) for r in merged["rows"]]
    assert keys == [("mixed", 0), ("mixed", 1), ("random", 0), ("random", 1)]  # default first
    assert merged["summary"]["paired"]["mixed vs random"]["tile_ap"]["wins"] == 1
    assert (tmp_path / "merged" / "results.md").is_file()

    # the same (strategy, seed, round) measured differently: not the same code or slides
    c = run("c", [row("random", 5, 1, 0.9)])
    with pytest.raises(SystemExit, match="differs"):
        bench.merge([a, c], tmp_path / "merged2")


@pytest.mark.slow
def test_simulation_tiny(shared_data: Path, tmp_path: Path) -> None:
    """One round, tiny slides, through sync: suggestions annotated, the rows sane."""
    out = tmp_path / "al"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable, str(SCRIPT), "--smoke", "--out", str(out),
            "--patches", str(shared_data / "pcam"),
            "--annotations", str(shared_data / "camelyon16-annotations"),
        ],
        capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "al_smoke" / "results.json").read_text())
    rows = result["rows"]
    assert {r["strategy"] for r in rows} == {"mixed", "random"}
    for strategy in ("mixed", "random"):
        mine = sorted((r for r in rows if r["strategy"] == strategy), key=lambda r: r["round"])
        assert [r["round"] for r in mine] == [0, 1]
        assert mine[1]["regions"] > 0 and mine[1]["area_mm2"] > mine[0]["area_mm2"]
        assert mine[1]["normal"] > mine[0]["normal"]  # the oracle's Normal became labels
        for key in ("tile_auroc", "tile_ap", "froc_candidates"):  # froc: None without lesions
            assert 0.0 <= mine[1][key] <= 1.0, key
        assert mine[1]["candidates_per_slide"] > 0
    text = (tmp_path / "al_smoke" / "results.md").read_text()
    assert all(k in text for k in ("tile_auroc", "tile_ap", "froc_candidates"))


def test_the_l2_study_keeps_the_annotations_of_rounds_up_to_r(
    bench: ModuleType, tmp_path: Path
) -> None:
    """``benchmarks/head_l2_by_slide.py --round R`` recognises the oracle's rounds by the ids
    ``annotate_round`` gives (key ``<entry>-<round>``): the start and rounds 1..R stay, later
    rounds and the model do not come along, and the original project is left as it was."""
    with benchmark_module("head_l2_by_slide.py") as study:
        _check_truncated(bench, study, tmp_path)


def _check_truncated(bench: ModuleType, study: ModuleType, tmp_path: Path) -> None:
    tumor_class, normal_class = _classes()
    truth = Point(400, 200).buffer(150)
    start = make_feature(
        truth, object_type="annotation", class_name=tumor_class, feature_id="start-id"
    )
    by_round = {
        r: bench.oracle_features(
            [box(100 * r, 0, 100 * r + 300, 300)],
            truth,
            tumor_class=tumor_class,
            normal_class=normal_class,
            key=f"4-{r}",
        )[0]
        for r in (1, 2, 3)
    }
    project = tmp_path / "project"
    folder = project / "qupath-rkd" / "annotations"
    folder.mkdir(parents=True)
    everything = [start] + [f for r in (1, 2, 3) for f in by_round[r]]
    original = json.dumps({"type": "FeatureCollection", "features": everything})
    (folder / "4.geojson").write_text(original, encoding="utf-8")
    (project / "qupath-rkd" / "model").mkdir()
    (project / "qupath-rkd" / "model" / "model.pt").write_bytes(b"x")
    copy = study.truncated(project, 1, tmp_path / "copy")
    kept = json.loads((copy / "qupath-rkd" / "annotations" / "4.geojson").read_text())["features"]
    assert [f["id"] for f in kept] == ["start-id"] + [f["id"] for f in by_round[1]]
    assert len(by_round[1]) == 2 and len(by_round[2]) == 2  # tumour and normal pieces
    assert not (copy / "qupath-rkd" / "model").exists()
    assert (folder / "4.geojson").read_text(encoding="utf-8") == original
