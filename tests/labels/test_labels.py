"""Labels from annotations: class mapping, flags, overlap rules, the hashed labelled set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely.geometry import Polygon, box

from qupath_rkd.constants import LABEL_IGNORE, LABEL_NORMAL, LABEL_TUMOR
from qupath_rkd.errors import AnnotationError, ConfigError, DataError
from qupath_rkd.labels import (
    FULLY_ANNOTATED_KEY,
    LABEL_UNLABELLED,
    TUMOR_FREE_KEY,
    ClassMapping,
    LabelConfig,
    SlideFlags,
    SlideInput,
    build_labelled_set,
    label_slide,
    label_tiles,
    overlap_fractions,
    prediction_region,
    role_geometry,
    slide_flags,
)
from qupath_rkd.qupath.geojson import QupathObject, make_feature, parse_features

TILE = 100.0
#: a 6 x 6 grid of 100 px tiles covering [0, 600) x [0, 600)
GRID = np.array([(x, y) for y in range(0, 600, 100) for x in range(0, 600, 100)], dtype=np.int64)


def _grid(inp: SlideInput, config: LabelConfig) -> tuple[np.ndarray, float]:
    return GRID, TILE


def _ann(geom: object, cls: str | None, object_type: str = "annotation") -> QupathObject:
    feat = make_feature(geom, object_type=object_type, class_name=cls, name="n")
    return parse_features([feat])[0]


def _objs(*pairs: tuple[object, str | None]) -> list[QupathObject]:
    out = []
    for i, (g, c) in enumerate(pairs):
        obj = _ann(g, c)
        out.append(QupathObject(**{**obj.__dict__, "index": i}))
    return out


def _input(
    objs: list[QupathObject],
    meta: dict[str, str] | None = None,
    eid: str = "1",
    path: str = "/slides/a.svs",
) -> SlideInput:
    return SlideInput(
        eid,
        f"slide {eid}",
        Path(path),
        objs,
        meta or {},
        600,
        600,
        0.5,
        source=f"annotations/{eid}.geojson",
    )


def test_class_mapping_roles_and_patterns() -> None:
    m = ClassMapping()
    assert m.role("Tumor") == "tumor"
    assert m.role("Tumor: Positive") == "tumor"  # derived class by its first part
    assert m.role("tumor") is None  # QuPath class names are case-sensitive
    assert m.role("Normal") == "normal"
    assert m.role("Ignore*") == "ignore" and m.role("Ignore artefact") == "ignore"
    assert m.role("Region*") == "region" and m.role("Stroma") is None and m.role(None) is None
    custom = ClassMapping.from_config({"tumor": ["Metastasis", "Tumor"], "ignore": "Tumor"})
    assert custom.role("Tumor") == "ignore"  # ignore wins over tumour
    assert custom.role("Metastasis") == "tumor"
    with pytest.raises(ConfigError, match="unknown key"):
        ClassMapping.from_config({"tumour": ["Tumor"]})
    with pytest.raises(ConfigError, match="list of class names"):
        ClassMapping.from_config({"tumor": [1, 2]})


def test_configs_accept_the_sync_sections_defaults() -> None:
    """The contract with sync: its [classes]/[labels] defaults build our config objects, and
    those equal the classes' own defaults field by field (a default changed in one place and
    not the other fails here, naming the field)."""
    from dataclasses import asdict, fields

    from qupath_rkd.sync.config import SCHEMA

    classes = ClassMapping.from_config({k: v.default for k, v in SCHEMA["classes"].items()})
    config = LabelConfig.from_config({k: v.default for k, v in SCHEMA["labels"].items()})
    # every field is a sync setting (none left to the class's default silently)
    assert set(SCHEMA["classes"]) == {f.name for f in fields(ClassMapping)}
    assert set(SCHEMA["labels"]) == {f.name for f in fields(LabelConfig)}
    for built, own in ((classes, ClassMapping()), (config, LabelConfig())):
        mine, theirs = asdict(built), asdict(own)
        differ = {k: (mine[k], theirs[k]) for k in theirs if mine[k] != theirs[k]}
        assert not differ, f"sync default vs {type(own).__name__} default: {differ}"
        for k in theirs:  # 2000 == 2000.0 would pass; the type must match too
            assert type(mine[k]) is type(theirs[k]), (k, mine[k], theirs[k])


def test_label_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="tumor_min_overlap"):
        LabelConfig(tumor_min_overlap=0.2, normal_max_tumor_overlap=0.3)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        LabelConfig(normal_min_overlap=1.5)
    with pytest.raises(ConfigError, match="unknown key"):
        LabelConfig.from_config({"tile_size": 96})
    assert LabelConfig.from_config({"mpp": 1}).mpp == 1.0


def test_slide_flags_from_metadata() -> None:
    assert slide_flags({TUMOR_FREE_KEY: "TRUE"}) == SlideFlags(tumor_free=True)
    assert slide_flags({FULLY_ANNOTATED_KEY: "yes", TUMOR_FREE_KEY: "no"}) == SlideFlags(
        fully_annotated=True
    )
    assert slide_flags(None) == SlideFlags()
    with pytest.raises(ConfigError, match=TUMOR_FREE_KEY) as info:
        slide_flags({TUMOR_FREE_KEY: "maybe"}, where="image 'x'")
    assert "image 'x'" in str(info.value)


def test_overlap_fractions_match_a_raster_count() -> None:
    rng = np.random.default_rng(0)
    pts = rng.uniform(50, 550, size=(12, 2))
    poly = shapely.convex_hull(shapely.multipoints(pts)).difference(box(250, 250, 330, 330))
    frac = overlap_fractions(GRID, TILE, poly)
    ys, xs = np.mgrid[0:600, 0:600] + 0.5
    inside = shapely.contains_xy(poly, xs.ravel(), ys.ravel()).reshape(600, 600)
    for (x, y), f in zip(GRID, frac, strict=True):
        expected = inside[y : y + 100, x : x + 100].mean()
        assert f == pytest.approx(expected, abs=0.02)
    assert overlap_fractions(GRID, TILE, Polygon()).sum() == 0


def test_overlap_rules() -> None:
    roles = role_geometry(
        _objs(
            (box(100, 100, 300, 300), "Tumor"),  # 4 tiles fully tumour
            (box(300, 100, 325, 200), "Tumor"),  # 25 % of tile (3, 1): ambiguous
            (box(150, 150, 250, 250), "Normal"),  # a normal island inside the tumour
            (box(0, 500, 600, 600), "Normal"),  # bottom row normal
            (box(500, 0, 550, 50), "Ignore*"),  # a quarter of tile (5, 0)
        ),
        ClassMapping(),
        width_px=600,
        height_px=600,
    )
    labels = label_tiles(GRID, TILE, roles, LabelConfig()).labels.reshape(6, 6)
    assert labels[1, 1] == LABEL_TUMOR  # 75 % tumour after the island is cut out
    assert labels[2, 2] == LABEL_TUMOR
    assert labels[1, 3] == LABEL_IGNORE  # tumour border
    assert (labels[5] == LABEL_NORMAL).all()
    assert labels[0, 5] == LABEL_IGNORE
    assert labels[0, 0] == LABEL_UNLABELLED  # nobody said anything about it
    flagged = label_tiles(GRID, TILE, roles, LabelConfig(), SlideFlags(fully_annotated=True))
    fl = flagged.labels.reshape(6, 6)
    assert fl[0, 0] == LABEL_NORMAL and fl[1, 3] == LABEL_IGNORE and fl[1, 1] == LABEL_TUMOR
    assert fl[0, 5] == LABEL_IGNORE  # ignore beats the flag


def test_regions_restrict_flagged_normals_and_prediction() -> None:
    objs = _objs((box(0, 0, 300, 600), "Region*"), (box(400, 400, 500, 500), "Stroma"))
    roles = role_geometry(objs, ClassMapping(), width_px=600, height_px=600)
    assert roles.n_used == 1 and roles.n_unused == 1
    labels = label_tiles(GRID, TILE, roles, LabelConfig(), SlideFlags(tumor_free=True)).labels
    normal_x = {int(x) for (x, _), lab in zip(GRID, labels, strict=True) if lab == LABEL_NORMAL}
    assert normal_x == {0, 100, 200}
    region = prediction_region(objs, ClassMapping())
    assert region is not None and region.equals(box(0, 0, 300, 600))
    assert prediction_region(objs[1:], ClassMapping()) is None


def test_annotations_outside_the_image() -> None:
    partial = _objs((box(500, 500, 700, 700), "Tumor"))
    roles = role_geometry(partial, ClassMapping(), width_px=600, height_px=600, source="f.geojson")
    assert roles.tumor.equals(box(500, 500, 600, 600)) and "clipped" in roles.notes[0]
    outside = _objs((box(0, 0, 10, 10), "Tumor"), (box(900, 900, 950, 950), "Tumor"))
    with pytest.raises(AnnotationError) as info:
        role_geometry(outside, ClassMapping(), width_px=600, height_px=600, source="f.geojson")
    message = str(info.value)
    assert "f.geojson feature 1 (Tumor)" in message and "600x600" in message
    assert "\n" not in message
    # a class nobody uses is not checked (it does not label anything)
    role_geometry(
        _objs((box(900, 900, 950, 950), "Stroma")), ClassMapping(), width_px=600, height_px=600
    )


def test_detections_and_points_do_not_label() -> None:
    objs = [
        _ann(box(0, 0, 300, 300), "Tumor", object_type="detection"),
        _ann(shapely.Point(50, 50), "Tumor"),
    ]
    roles = role_geometry(objs, ClassMapping())
    assert roles.tumor.is_empty and roles.n_used == 0


def test_tumour_free_slide_with_tumour_is_refused() -> None:
    inp = _input(_objs((box(0, 0, 100, 100), "Tumor")), {TUMOR_FREE_KEY: "true"})
    with pytest.raises(DataError, match="tumour-free but has tumour"):
        label_slide(inp, ClassMapping(), LabelConfig(), grid_fn=_grid)


def test_slides_without_labels_are_not_opened() -> None:
    def refuse(inp: SlideInput, config: LabelConfig) -> tuple[np.ndarray, float]:
        raise AssertionError("the slide should not be opened")

    got = label_slide(
        _input(_objs((box(0, 0, 50, 50), "Stroma"))), ClassMapping(), LabelConfig(), grid_fn=refuse
    )
    assert len(got.labels) == 0 and got.n_annotations == 0


def _set(slides: list[SlideInput], **config: object):  # type: ignore[no-untyped-def]
    return build_labelled_set(slides, ClassMapping(), LabelConfig(**config), grid_fn=_grid)


def test_labelled_set_items_summary_and_trainability() -> None:
    annotated = _input(_objs((box(100, 100, 300, 300), "Tumor")), {FULLY_ANNOTATED_KEY: "true"})
    free = _input([], {TUMOR_FREE_KEY: "true"}, eid="2", path="/slides/b.svs")
    unlabelled = _input([], {}, eid="10", path="/slides/c.svs")
    ls = _set([unlabelled, free, annotated])
    assert [s.entry_id for s in ls.slides] == ["1", "2", "10"]  # numeric entry-ID order
    assert ls.count(LABEL_TUMOR) == 4 and ls.count(LABEL_NORMAL) == 32 + 36
    assert all(isinstance(it, tuple) and len(it) == 4 for it in ls.items)
    assert ls.items[0] == ("/slides/a.svs", 0, 0, LABEL_NORMAL)  # sorted: slide, row, column
    assert ls.labels.dtype == np.int64 and len(ls.labels) == len(ls.items)
    assert ls.slide_mpp == {"/slides/a.svs": 0.5, "/slides/b.svs": 0.5, "/slides/c.svs": 0.5}
    rows = {r["entry_id"]: r for r in ls.summary_rows()}
    assert (rows["1"]["tumor"], rows["1"]["normal"], rows["1"]["ignored"]) == (4, 32, 0)
    assert rows["2"]["flag"] == "tumour-free" and rows["10"]["used_normal"] == 0
    text = ls.summary()
    assert "slide 1" in text and "fully annotated" in text and ls.sha256[:12] in text
    assert "total" in text and " 68" in text
    ls.check_trainable()
    _set([free])  # normal only: the one-class knn scorer, allowed
    with pytest.raises(DataError, match="no tumour and no normal"):
        _set([unlabelled])
    only_tumour = _input(_objs((box(100, 100, 300, 300), "Tumor")))
    with pytest.raises(DataError, match="only tumour tiles") as info:
        _set([only_tumour])
    assert TUMOR_FREE_KEY in str(info.value)


def test_hash_changes_exactly_when_labels_change() -> None:
    def build(tumour: Polygon, path: str = "/slides/a.svs", **config: object) -> str:
        slides = [
            _input(_objs((tumour, "Tumor")), {FULLY_ANNOTATED_KEY: "true"}, path=path),
            _input([], {TUMOR_FREE_KEY: "true"}, eid="2", path=path + ".2"),
        ]
        return _set(slides, **config).sha256

    base = build(box(100, 100, 300, 300))
    assert build(box(100, 100, 300, 300)) == base
    assert build(box(100, 100, 300, 300), path="/moved/elsewhere.svs") == base  # slides moved
    assert build(box(101, 101, 299, 299)) == base  # a nudge that changes no tile label
    assert build(box(100, 100, 301, 301)) != base  # touching the next tiles makes them ignored
    assert build(box(100, 100, 400, 300)) != base  # two more tumour tiles
    assert build(box(100, 100, 300, 300), tumor_min_overlap=0.9) != base  # config is hashed


def test_sampling_is_seeded_and_capped() -> None:
    slides = [
        _input([], {TUMOR_FREE_KEY: "true"}, eid=str(i), path=f"/s/{i}.svs") for i in range(1, 4)
    ]
    a = _set(slides, max_tiles_per_class=20, seed=1)
    b = _set(slides, max_tiles_per_class=20, seed=1)
    c = _set(slides, max_tiles_per_class=20, seed=2)
    assert len(a.items) == 20 and a.items == b.items and a.sha256 == b.sha256
    assert a.items != c.items and a.sha256 != c.sha256
    assert a.items == sorted(a.items, key=lambda t: (t.slide_path, t.y_px, t.x_px))


def test_two_entries_with_one_file_are_refused() -> None:
    slides = [
        _input([], {TUMOR_FREE_KEY: "true"}, eid="1"),
        _input([], {TUMOR_FREE_KEY: "true"}, eid="2"),
    ]
    with pytest.raises(DataError, match="same slide file"):
        _set(slides)


def test_a_slide_that_cannot_be_used_can_be_left_out() -> None:
    from qupath_rkd.errors import ProjectError, SlideNotFoundError

    def grid(inp: SlideInput, config: LabelConfig) -> tuple[np.ndarray, float]:
        if inp.entry_id == "2":
            raise SlideNotFoundError("/slides/b.svs: no such file")
        return GRID, TILE

    slides = [
        _input([], {TUMOR_FREE_KEY: "true"}),
        _input([], {TUMOR_FREE_KEY: "true"}, eid="2", path="/slides/b.svs"),
    ]
    with pytest.raises(SlideNotFoundError):
        build_labelled_set(slides, ClassMapping(), LabelConfig(), grid_fn=grid)
    failed: dict[str, Exception] = {}
    ls = build_labelled_set(slides, ClassMapping(), LabelConfig(), grid_fn=grid, failed=failed)
    assert list(failed) == ["2"] and [s.entry_id for s in ls.slides] == ["1"]
    missing = SlideInput("3", "c", None, [], {TUMOR_FREE_KEY: "true"})
    with pytest.raises(ProjectError, match="slide-root"):
        build_labelled_set([missing], ClassMapping(), LabelConfig())
