"""A slide's files rendered apart from their writing (issue 14.4): the tile GeoJSON built without
shapely is the one ``make_feature`` makes from a ``box`` per tile, byte for byte, and the bytes
:func:`render_slide_outputs` makes (on a Dask worker, in a cluster run) are the files
:func:`write_slide_outputs` writes in one process."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from shapely.geometry import box

from qupath_rkd.errors import AnnotationError
from qupath_rkd.heatmap import Heatmap
from qupath_rkd.inference.predict import TileScores
from qupath_rkd.inference.write import (
    render_slide_outputs,
    tile_features,
    tiles_geojson_text,
    write_slide_outputs,
)
from qupath_rkd.outputs import MEASURE_PROBABILITY, MEASURE_SCORE, SlideOutputs
from qupath_rkd.qupath.geojson import (
    TOOL_NAME_PREFIX,
    features_to_json,
    make_feature,
    qupath_import_problems,
    stable_feature_id,
)


def shapely_tile_features(pred: Any, key: str, slide_id: str) -> list[dict[str, Any]]:
    """The tile features as they were made before (a shapely box per tile): the reference."""
    t, hm = pred.tiles, pred.heatmap
    x0, y0 = hm.to_level0_xy(t.rc[:, 0] - 0.5, t.rc[:, 1] - 0.5)
    side = hm.stride_level0_px
    return [
        make_feature(
            box(float(x0[i]), float(y0[i]), float(x0[i]) + side, float(y0[i]) + side),
            object_type="tile",
            name=f"{TOOL_NAME_PREFIX} tile",
            feature_id=stable_feature_id(key, slide_id, "tile", i),
            measurements={
                MEASURE_PROBABILITY: float(t.probability[i]),
                MEASURE_SCORE: float(t.score[i]),
            },
        )
        for i in range(len(t))
    ]


def grid_prediction(
    origin: tuple[float, float], stride: float, n_rows: int = 23, n_cols: int = 31
) -> Any:
    """Tiles on every second cell of a grid with an odd origin and stride (level-0 px),
    probabilities and scores as float32."""
    rng = np.random.default_rng(7)
    rr, cc = np.mgrid[0:n_rows, 0:n_cols]
    keep = ((rr + cc) % 2 == 0).ravel()
    rc = np.stack([rr.ravel()[keep], cc.ravel()[keep]], axis=1).astype(np.int64)
    prob = rng.random(len(rc)).astype(np.float32)
    prob[:3] = [0.0, 1.0, 0.5]
    score = (rng.normal(size=len(rc)) * 10).astype(np.float32)
    heat = np.full((n_rows, n_cols), np.nan, np.float32)
    heat[rc[:, 0], rc[:, 1]] = prob
    hm = Heatmap(heat, origin, stride, stride * 1.5, 0.25)
    xy = np.round(np.stack([origin[0] + rc[:, 1] * stride, origin[1] + rc[:, 0] * stride], 1))
    tiles = TileScores(xy.astype(np.int64), rc, stride * 1.5, score, prob)
    return SimpleNamespace(tiles=tiles, heatmap=hm)


@pytest.mark.parametrize(
    ("origin", "stride"),
    [((0.0, 0.0), 256.0), ((13.37, 7.123456), 41.70913), ((-0.005, 1e5 + 0.125), 0.335)],
)
def test_tile_features_are_make_feature_of_a_box_byte_for_byte(
    origin: tuple[float, float], stride: float
) -> None:
    pred = grid_prediction(origin, stride)
    fast = tile_features(pred, "key-1", "slide_a")
    assert fast == shapely_tile_features(pred, "key-1", "slide_a")
    text = features_to_json(fast)
    assert text == features_to_json(shapely_tile_features(pred, "key-1", "slide_a"))
    assert tiles_geojson_text(pred, "key-1", "slide_a") == text  # the file, written directly
    import json

    assert qupath_import_problems(json.loads(text)) == []


@pytest.mark.parametrize("field", ["probability", "score"])
def test_a_non_finite_tile_measurement_is_the_error_make_feature_gives(field: str) -> None:
    pred = grid_prediction((5.0, 5.0), 64.0)
    values = getattr(pred.tiles, field).copy()
    values[17] = np.nan
    pred.tiles = dataclasses.replace(pred.tiles, **{field: values})
    with pytest.raises(AnnotationError) as fast:
        tile_features(pred, "k", "s")
    with pytest.raises(AnnotationError) as text:
        tiles_geojson_text(pred, "k", "s")
    assert text.value.one_line() == fast.value.one_line()
    with pytest.raises(AnnotationError) as reference:
        shapely_tile_features(pred, "k", "s")
    assert fast.value.one_line() == reference.value.one_line()
    assert "nan" in fast.value.one_line()


def test_no_tiles_give_an_empty_collection() -> None:
    pred = grid_prediction((0.0, 0.0), 32.0)
    keep = np.zeros(len(pred.tiles), bool)
    t = pred.tiles
    pred.tiles = dataclasses.replace(
        t, xy_px=t.xy_px[keep], rc=t.rc[keep], score=t.score[keep], probability=t.probability[keep]
    )
    assert tile_features(pred, "k", "s") == []
    assert tiles_geojson_text(pred, "k", "s") == features_to_json([])


def _digests(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "done.json"
    }


def test_rendered_bytes_are_the_files_written(tmp_path: Path, semireal, model) -> None:
    """What a worker renders and the client writes = what one process writes; bytes made for
    another key or slide are not used (the files are made again, right)."""
    from qupath_rkd.inference import InferenceConfig, predict_slide
    from qupath_rkd.inference.write import read_done

    from .conftest import median_threshold

    probe = predict_slide(semireal.path, model, config=InferenceConfig(num_workers=0))
    cfg = InferenceConfig(threshold=median_threshold(probe.heatmap.probability), num_workers=0)
    pred = predict_slide(semireal.path, model, config=cfg)
    assert pred.lesions, "nothing to compare: no lesion at the median"
    key = pred.config.key(pred.model_id)
    one = SlideOutputs(tmp_path / "one", "semireal_a")
    write_slide_outputs(one, pred, key)
    rendered = render_slide_outputs(pred, key, "semireal_a")
    assert rendered.n_bytes > 0
    two = SlideOutputs(tmp_path / "two", "semireal_a")
    write_slide_outputs(two, pred, key, rendered=rendered)
    expected = _digests(tmp_path / "one")
    assert set(expected) == {
        "heatmap.npy", "heatmap.json", "lesions.geojson", "tiles.geojson", "tiles.csv",
        "heatmap.png", "semireal_a.csv",
    }  # fmt: skip
    assert _digests(tmp_path / "two") == expected
    assert read_done(two)["key"] == key
    for wrong in (
        dataclasses.replace(rendered, key="another-key"),
        dataclasses.replace(rendered, slide_id="another_slide"),
    ):
        three = SlideOutputs(tmp_path / f"three-{wrong.key}-{wrong.slide_id}", "semireal_a")
        write_slide_outputs(three, pred, key, rendered=wrong)
        assert _digests(three.out_dir) == expected
    # the overlay's title names the slide the caller gave, whatever path the renderer saw
    renamed = render_slide_outputs(pred, key, "semireal_a", slide_name="other-name.tif")
    assert renamed.heatmap_png != rendered.heatmap_png
    assert renamed.tiles_geojson == rendered.tiles_geojson


def test_slide_scores_with_a_done_cache_read_each_done_json_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    import qupath_rkd.inference.write as write
    from qupath_rkd.inference.predict import SlideRun

    runs = []
    for i in range(5):
        outputs = SlideOutputs(tmp_path, f"s{i}")
        outputs.folder.mkdir(parents=True)
        done = {"probability_max": 0.5 + i / 10, "positive": i % 2 == 0, "tumor_area_mm2": 1.25}
        outputs.done_json.write_text(json.dumps(done))
        runs.append(SlideRun(Path(f"s{i}.tif"), f"s{i}", "ok", 0.1 * i, 100, i))
    runs.append(SlideRun(Path("bad.tif"), "bad", "failed", error="unreadable"))
    reads: list[str] = []
    real = write._done_for
    monkeypatch.setattr(write, "_done_for", lambda out, sid: reads.append(sid) or real(out, sid))
    cache: dict[str, dict[str, Any]] = {}
    texts = []
    for n in range(1, len(runs) + 1):
        texts.append(write.write_slide_scores(tmp_path, runs[:n], done_cache=cache).read_text())
    assert sorted(reads) == [f"s{i}" for i in range(5)]  # each once, the failed one never
    reads.clear()
    assert write.write_slide_scores(tmp_path, runs).read_text() == texts[-1]
    assert len(reads) == 5
    assert "0.9" in texts[-1] and "true" in texts[-1] and "failed: unreadable" in texts[-1]
