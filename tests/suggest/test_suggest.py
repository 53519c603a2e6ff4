"""The pure ranking of regions to annotate next (qupath_rkd.suggest), on synthetic heatmaps."""

from __future__ import annotations

import json

import numpy as np
import pytest
from shapely.geometry import box

from qupath_rkd.heatmap import Heatmap
from qupath_rkd.labels import ClassMapping
from qupath_rkd.qupath.geojson import features_to_json, parse_features, qupath_import_problems
from qupath_rkd.suggest import SIGNALS, SuggestConfig, SuggestSlide, suggest_regions
from qupath_rkd.suggest.write import (
    MEASURE_RANK,
    MEASURE_SCORE,
    SUGGESTION_CLASS,
    suggestion_features,
)

CELL_PX = 100.0  # level-0 px per cell; mpp 1 -> 100 µm cells, a 1 mm region = 10 x 10 cells


def _heatmap(seed: int, shape: tuple[int, int] = (30, 40)) -> Heatmap:
    rng = np.random.default_rng(seed)
    prob = rng.random(shape).astype(np.float32)
    prob[:, :3] = np.nan  # background on the left
    return Heatmap(prob, (0.0, 0.0), CELL_PX, CELL_PX, 1.0)


def _slides() -> list[SuggestSlide]:
    annotated = box(1000.0, 1000.0, 2500.0, 2200.0)
    return [
        SuggestSlide("1", "annotated.tif", _heatmap(1), excluded=annotated),
        SuggestSlide("2", "tumour-free.tif", _heatmap(2), tumor_free=True),
        SuggestSlide("3", "free.tif", _heatmap(3)),
        SuggestSlide("4", "fully.tif", _heatmap(4), fully_annotated=True),
    ]


def _feature_fn(slides: list[SuggestSlide]):  # type: ignore[no-untyped-def]
    """Deterministic fake features: the cell's probability and position, 4 dims."""

    def fn(index: int, cells: np.ndarray) -> np.ndarray:
        p = slides[index].heatmap.probability[cells[:, 0], cells[:, 1]]
        return np.stack([p, cells[:, 0] / 30.0, cells[:, 1] / 40.0, np.full(len(p), index)], 1)

    return fn


# tumour_first is resolved to one of the others by its caller (sync), tested below
@pytest.mark.parametrize(
    "signal", [s for s in SIGNALS if s not in ("tta_disagreement", "tumour_first")]
)
def test_never_on_annotations_or_flagged_slides_and_within_the_caps(signal: str) -> None:
    slides = _slides()
    cfg = SuggestConfig(signal=signal, per_slide=3, per_project=5)
    labelled = np.random.default_rng(0).random((20, 4))
    result = suggest_regions(
        slides,
        threshold=0.4,
        config=cfg,
        feature_fn=_feature_fn(slides),
        labelled_features=labelled,
    )
    got = result.suggestions
    assert 1 <= len(got) <= 5
    assert [s.rank for s in got] == list(range(1, len(got) + 1))
    assert {s.entry_id for s in got} <= {"1", "3"}  # never tumour-free / fully annotated
    for entry in ("1", "3"):
        assert sum(s.entry_id == entry for s in got) <= 3
    for s in got:
        assert s.geometry.area <= (10 * CELL_PX) ** 2 + 1e-6  # at most 1 x 1 mm
        assert s.geometry.geom_type == "Polygon"  # one connected group of cells
        if s.entry_id == "1":
            assert s.geometry.intersection(slides[0].excluded).area == 0.0
        hm = slides[s.slide_index].heatmap
        assert np.isfinite(hm.probability[s.cells[:, 0], s.cells[:, 1]]).all()  # tissue only
    for a in got:  # picks are not neighbours: no shared cell edge or corner
        for b in got:
            if a.rank < b.rank and a.entry_id == b.entry_id:
                assert a.geometry.distance(b.geometry) > 0


def test_same_inputs_same_output() -> None:
    def run() -> str:
        slides = _slides()
        result = suggest_regions(
            slides,
            threshold=0.5,
            config=SuggestConfig(),
            feature_fn=_feature_fn(slides),
            labelled_features=np.ones((3, 4)),
        )
        return features_to_json(
            [f for fs in suggestion_features(result.suggestions, "k").values() for f in fs]
        )

    assert run() == run()


def test_uncertainty_prefers_probabilities_at_the_threshold() -> None:
    prob = np.full((20, 20), 0.95, np.float32)
    prob[10:20, 10:20] = 0.31  # one block right at the threshold
    hm = Heatmap(prob, (0.0, 0.0), CELL_PX, CELL_PX, 1.0)
    slides = [SuggestSlide("1", "a", hm)]
    cfg = SuggestConfig(signal="uncertainty", per_slide=1)
    best = suggest_regions(slides, threshold=0.3, config=cfg).suggestions[0]
    assert best.reason == "uncertain"
    assert set(map(tuple, best.cells)) == {(r, c) for r in range(10, 20) for c in range(10, 20)}
    top = suggest_regions(slides, threshold=0.3, config=SuggestConfig(signal="top_probability"))
    assert top.suggestions[0].mean_probability == pytest.approx(0.95)


def test_diversity_picks_what_is_unlike_the_labelled_tiles() -> None:
    hm = Heatmap(np.full((10, 30), 0.5, np.float32), (0.0, 0.0), CELL_PX, CELL_PX, 1.0)
    slides = [SuggestSlide("1", "a", hm)]

    def fn(index: int, cells: np.ndarray) -> np.ndarray:  # the right third is different
        return np.stack([cells[:, 1] >= 20, cells[:, 1] < 20], 1).astype(float)

    labelled = np.array([[0.0, 1.0]])  # looks like the left two thirds
    result = suggest_regions(
        slides,
        threshold=0.5,
        config=SuggestConfig(signal="diversity", per_slide=1),
        feature_fn=fn,
        labelled_features=labelled,
    )
    best = result.suggestions[0]
    assert best.reason == "unlike anything labelled"
    assert best.cells[:, 1].min() >= 20


def test_tta_disagreement_uses_the_views() -> None:
    hm = Heatmap(np.full((10, 20), 0.5, np.float32), (0.0, 0.0), CELL_PX, CELL_PX, 1.0)
    views = np.full((4, 10, 20), 0.5, np.float32)
    views[::2, :, 10:] = 0.1  # the views disagree on the right half
    with_views = SuggestSlide("1", "a", hm, view_probability=views)
    cfg = SuggestConfig(signal="tta_disagreement", per_slide=1)
    best = suggest_regions([with_views], threshold=0.5, config=cfg).suggestions[0]
    assert best.cells[:, 1].min() >= 10 and best.reason == "views disagree"
    none = suggest_regions([SuggestSlide("1", "a", hm)], threshold=0.5, config=cfg)
    assert not none.suggestions and "per-view" in none.notes[0]


def test_tta_disagreement_from_view_fn_scores_only_the_pooled_cells() -> None:
    """Without dense views (what sync gives), ``view_fn`` is asked only for the spread cells of
    each slide's most uncertain candidates, and the one whose views disagree is picked."""
    prob = np.full((10, 20), 0.9, np.float32)
    prob[:, 10:] = 0.6
    prob[5:, 10:] = 0.5  # the most uncertain: the bottom right quarter
    hm = Heatmap(prob, (0.0, 0.0), CELL_PX, CELL_PX, 1.0)
    asked: list[tuple[int, int]] = []

    def view_fn(index: int, cells: np.ndarray) -> np.ndarray:
        asked.extend((int(r), int(c)) for r, c in cells)
        out = np.full((4, len(cells)), 0.5)
        out[::2, cells[:, 1] >= 12] = 0.1  # the views disagree from column 12 on
        return out

    cfg = SuggestConfig(signal="tta_disagreement", per_slide=1, region_um=300.0)
    result = suggest_regions(
        [SuggestSlide("1", "a", hm)], threshold=0.5, config=cfg, view_fn=view_fn
    )
    best = result.suggestions[0]
    assert best.reason == "views disagree" and best.score > 0
    assert best.cells[:, 1].min() >= 12 and best.cells[:, 0].min() >= 5
    # only the cells of the most uncertain (pooled) candidates were scored
    assert asked and all(r >= 5 and c >= 10 for r, c in asked)
    assert not result.notes


def test_random_is_seeded() -> None:
    slides = _slides()
    pick = lambda seed: [  # noqa: E731
        tuple(s.cells[0])
        for s in suggest_regions(
            slides, threshold=0.5, config=SuggestConfig(signal="random", seed=seed)
        ).suggestions
    ]
    assert pick(1) == pick(1)
    assert pick(1) != pick(2)


def test_no_unannotated_tissue_gives_no_suggestions_and_a_note() -> None:
    hm = _heatmap(5, (12, 12))
    slides = [
        SuggestSlide("1", "a", hm, excluded=box(-1e4, -1e4, 1e5, 1e5)),
        SuggestSlide("2", "b", hm, tumor_free=True),
    ]
    result = suggest_regions(slides, threshold=0.5, config=SuggestConfig())
    assert result.suggestions == [] and "no unannotated tissue" in result.notes[0]


def test_qupath_objects_are_detections_the_label_reader_ignores() -> None:
    slides = _slides()
    result = suggest_regions(slides, threshold=0.5, config=SuggestConfig(signal="uncertainty"))
    feats = [f for fs in suggestion_features(result.suggestions, "key").values() for f in fs]
    data = json.loads(features_to_json(feats))
    assert qupath_import_problems(data) == []
    objs = parse_features(data)
    assert all(o.object_type == "detection" and o.class_name == SUGGESTION_CLASS for o in objs)
    assert all(o.is_tool_object for o in objs)
    assert sorted(o.measurements[MEASURE_RANK] for o in objs) == [
        float(s.rank) for s in result.suggestions
    ]
    assert all(
        MEASURE_SCORE in o.measurements and "(uncertain)" in o.name and ":" not in o.name
        for o in objs
    )
    # even a pattern that matches every class gives qupath-rkd's own class no role
    mapping = ClassMapping.from_config({"normal": ["*"]})
    assert mapping.role(SUGGESTION_CLASS) is None and mapping.role("Stroma") == "normal"


def test_suggestion_features_are_recognised_after_a_round_trip() -> None:
    """Regression: the class has a colon, so it is written as QuPath's derived class
    (``names``); a re-read file's suggestions must still be recognised (and replaced)."""
    from qupath_rkd.suggest.write import is_suggestion_feature

    slides = _slides()
    result = suggest_regions(slides, threshold=0.5, config=SuggestConfig(signal="uncertainty"))
    feats = [f for fs in suggestion_features(result.suggestions, "k").values() for f in fs]
    again = json.loads(features_to_json(feats))["features"]
    assert again and all(is_suggestion_feature(f) for f in again)
    assert not is_suggestion_feature({"properties": {"classification": {"name": "Tumor"}}})


def test_tumour_first_turns_to_uncertainty_diversity_at_enough_tumour_regions() -> None:
    from qupath_rkd.suggest.config import (
        SIGNAL_COMBINED,
        SIGNAL_TOP_PROBABILITY,
        SIGNAL_TUMOUR_FIRST,
        TUMOUR_FIRST_MIN_REGIONS,
        tumour_first_signal,
    )

    assert tumour_first_signal(0) == SIGNAL_TOP_PROBABILITY
    assert tumour_first_signal(TUMOUR_FIRST_MIN_REGIONS - 1) == SIGNAL_TOP_PROBABILITY
    assert tumour_first_signal(TUMOUR_FIRST_MIN_REGIONS) == SIGNAL_COMBINED
    # unresolved, it is a clear error, never a silent fallback to another signal
    with pytest.raises(ValueError, match="tumour_first_signal"):
        suggest_regions([], threshold=0.5, config=SuggestConfig(signal=SIGNAL_TUMOUR_FIRST))


def _with_features(slides: list, cfg: SuggestConfig) -> list:
    """The suggestions for ``slides`` at threshold 0.4, with features and 20 labelled tiles."""
    return suggest_regions(
        slides,
        threshold=0.4,
        config=cfg,
        feature_fn=_feature_fn(slides),
        labelled_features=np.random.default_rng(0).random((20, 4)),
    ).suggestions


def _picks_on_two_slides(signal: str, n: int = 4, seed: int = 0) -> list:
    """``signal``'s first ``n`` picks on :func:`_slides` (:func:`_with_features`; 300 µm
    regions, at most 3 per slide)."""
    cfg = SuggestConfig(signal=signal, per_slide=3, per_project=n, region_um=300.0, seed=seed)
    return _with_features(_slides(), cfg)


def test_mixed_takes_uncertain_and_probable_picks_in_turn() -> None:
    """``mixed``: odd ranks are the combined signal's picks (reason uncertain...), even ranks
    the most probable tumour left (reason probable tumour), and the first of each kind is
    what that signal alone would pick first."""
    mixed, combined, top = (
        _picks_on_two_slides(s) for s in ("mixed", "uncertainty_diversity", "top_probability")
    )
    assert len(mixed) == 4
    assert [s.reason.startswith("uncertain") for s in mixed] == [True, False, True, False]
    assert [s.reason for s in mixed[1::2]] == ["probable tumour"] * 2
    assert mixed[0].geometry.equals(combined[0].geometry)
    first_top = next(s for s in top if not s.geometry.intersects(mixed[0].geometry))
    assert mixed[1].geometry.equals(first_top.geometry)
    # the probable picks are the likeliest tumour: above every uncertain pick's mean
    assert min(s.mean_probability for s in mixed[1::2]) > max(
        s.mean_probability for s in mixed[0::2]
    )


def test_mixed_random_adds_a_random_turn() -> None:
    """``mixed_random``: ranks 1, 2, 3, 4 are the uncertain, the probable-tumour, a random
    and again an uncertain pick; the random one is the seeded ``random`` signal's first pick
    that does not touch the two before it."""
    got = _picks_on_two_slides("mixed_random", seed=3)
    plain = _picks_on_two_slides("random", n=12, seed=3)
    assert [s.reason.split(",")[0] for s in got] == [
        "uncertain",
        "probable tumour",
        "random pick",
        "uncertain",
    ]
    first_random = next(
        s for s in plain if not any(s.geometry.distance(e.geometry) == 0 for e in got[:2])
    )
    assert got[2].geometry.equals(first_random.geometry)


def test_mixed_never_suggests_with_an_infinite_score_when_its_pool_runs_out() -> None:
    """Regression: ``qupath-rkd demo`` failed with "'Suggestion score' ... is -inf" when the
    combined turn of ``mixed`` found every candidate with features (the most uncertain ones)
    blocked by earlier picks; that turn now goes to the most probable tumour instead."""
    prob = np.full((30, 40), 0.95, dtype=np.float32)
    prob[:5, :5] = 0.4  # the only uncertain tissue: one small patch, used up by one pick
    slides = [SuggestSlide("1", "one.tif", Heatmap(prob, (0.0, 0.0), CELL_PX, CELL_PX, 1.0))]
    cfg = SuggestConfig(signal="mixed", per_slide=5, per_project=5, region_um=300.0)
    got = _with_features(slides, cfg)
    assert len(got) == 5
    assert all(np.isfinite(s.score) for s in got), [s.score for s in got]
    # ranks 1 and 3 from the pool; at rank 5, the combined signal's turn, it is used up
    assert [s.reason.startswith("uncertain") for s in got] == [True, False, True, False, False]
    assert got[4].reason == "probable tumour"


def test_mixed_measures_diversity_from_a_probable_pick_by_its_own_features() -> None:
    """Regression: a probable-tumour pick of ``mixed`` outside the pool of candidates with
    features counted as a zero feature vector, which capped every later distance at 1 (the
    norm of a unit vector): the next uncertain pick's diversity was cut for nothing."""
    prob = np.full((20, 40), 0.95, dtype=np.float32)
    prob[:4, :4] = prob[:4, 20:24] = 0.4  # two uncertain patches, far apart
    slides = [SuggestSlide("1", "one.tif", Heatmap(prob, (0.0, 0.0), CELL_PX, CELL_PX, 1.0))]

    def fn(index: int, cells: np.ndarray) -> np.ndarray:
        out = np.zeros((len(cells), 4))
        in_a = (cells[:, 0] < 4) & (cells[:, 1] < 4)
        in_b = (cells[:, 0] < 4) & (cells[:, 1] >= 20) & (cells[:, 1] < 24)
        out[in_a, 1] = out[in_b, 2] = 1.0
        out[~in_a & ~in_b, 0] = 1.0  # the probable tumour: unlike both patches
        return out

    cfg = SuggestConfig(signal="mixed", per_slide=3, per_project=3, region_um=300.0)
    labelled = np.array([[0.0, 0.0, 0.0, 1.0]])  # unlike everything on the slide
    got = suggest_regions(
        slides, threshold=0.4, config=cfg, feature_fn=fn, labelled_features=labelled
    ).suggestions
    assert [s.reason for s in got] == [
        "uncertain, unlike anything labelled",
        "probable tumour",
        "uncertain, unlike anything labelled",
    ]
    # the second patch is as unlike the labelled tile, the first pick and the probable pick
    # (orthogonal features) as the first patch was: the same score, 1
    assert got[0].score == pytest.approx(1.0) and got[2].score == pytest.approx(1.0)
