"""QuPath GeoJSON: every form QuPath 0.2–0.6 writes is read; what we write is what 0.4+ imports."""

from __future__ import annotations

import json
import logging
import math
import uuid
from pathlib import Path
from typing import Any

import pytest
import shapely
from shapely.geometry import Polygon, box

from qupath_rkd.errors import AnnotationError
from qupath_rkd.qupath.geojson import (
    features_to_json,
    is_tool_object,
    make_feature,
    parse_features,
    read_geojson,
    stable_feature_id,
    write_geojson,
)

QUPATH_TYPES = {"annotation", "detection", "tile", "cell", "tmaCore"}


def assert_qupath_importable(collection: dict[str, Any]) -> None:
    """What QuPath 0.4+'s GeoJSON import needs (qupath-core PathObjectTypeAdapters): a
    FeatureCollection of Features with a UUID id, a geometry, objectType, a classification
    with a name and an RGB colour, measurements as a map of numbers. A MultiPolygon is one
    object (QuPath imports it as one), as each qupath-rkd lesion is."""
    assert collection["type"] == "FeatureCollection"
    ids = set()
    for feat in collection["features"]:
        assert feat["type"] == "Feature"
        assert str(uuid.UUID(feat["id"])) == feat["id"]
        ids.add(feat["id"])
        assert feat["geometry"]["type"] in {"Polygon", "MultiPolygon", "Point", "LineString"}
        props = feat["properties"]
        assert props["objectType"] in QUPATH_TYPES
        if "classification" in props:
            cls = props["classification"]
            assert isinstance(cls.get("name"), str) or isinstance(cls.get("names"), list)
            assert len(cls["color"]) == 3 and all(0 <= int(c) <= 255 for c in cls["color"])
        for value in props.get("measurements", {}).values():
            assert isinstance(value, float) and math.isfinite(value)
    assert len(ids) == len(collection["features"]), "a reused UUID duplicates on re-import"


def test_round_trip_keeps_holes_class_and_measurements(tmp_path: Path) -> None:
    outer = [(0, 0), (1000, 0), (1000, 800), (0, 800)]
    hole = [(200, 200), (400, 200), (400, 400), (200, 400)]
    poly = Polygon(outer, [hole])
    feat = make_feature(
        poly,
        class_name="Tumor",
        measurements={"max probability": 0.93, "area µm²": 12345, "n": 3},
        name="qupath-rkd lesion 1",
    )
    path = tmp_path / "p.geojson"
    write_geojson(path, [feat])
    collection = json.loads(path.read_text(encoding="utf-8"))
    assert_qupath_importable(collection)
    (obj,) = read_geojson(path)
    assert obj.geometry.equals(poly) and len(obj.geometry.interiors) == 1
    assert obj.object_type == "detection" and obj.class_name == "Tumor"
    assert obj.color == (200, 0, 0)  # QuPath's default Tumor colour
    assert obj.measurements == {"max probability": 0.93, "area µm²": 12345.0, "n": 3.0}
    assert obj.name == "qupath-rkd lesion 1" and obj.is_tool_object
    assert obj.object_id == feat["id"] and obj.repair is None


def test_a_multipolygon_stays_one_feature_with_its_holes(tmp_path: Path) -> None:
    # One lesion in parts is one QuPath object: split, each part repeated the lesion's name
    # and measurements (LN-03: 9 lesions became 29 objects, Area summed 6x too large).
    multi = shapely.MultiPolygon(
        [box(0, 0, 10, 10), Polygon(box(20, 0, 40, 20).exterior, [box(25, 5, 30, 10).exterior])]
    )
    feat = make_feature(
        multi,
        object_type="detection",
        class_name="Tumor",
        name="qupath-rkd lesion 1",
        measurements={"Area µm^2": multi.area},
    )
    path = tmp_path / "m.geojson"
    write_geojson(path, [feat])
    collection = json.loads(path.read_text())
    assert_qupath_importable(collection)
    assert len(collection["features"]) == 1
    assert collection["features"][0]["geometry"]["type"] == "MultiPolygon"
    (obj,) = read_geojson(path)
    assert obj.geometry.equals(multi) and obj.object_id == feat["id"]
    assert len(obj.geometry.geoms[1].interiors) == 1  # the hole is kept
    assert obj.measurements["Area µm^2"] == pytest.approx(obj.geometry.area)


def test_invalid_polygons_are_repaired_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bowtie = {"type": "Polygon", "coordinates": [[[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]]}
    path = tmp_path / "a.geojson"
    path.write_text(json.dumps({"type": "Feature", "geometry": bowtie, "properties": {}}))
    with caplog.at_level(logging.WARNING):
        (obj,) = read_geojson(path)
    assert obj.geometry.is_valid and obj.geometry.area == pytest.approx(50.0)
    assert obj.repair is not None and "Self-intersection" in obj.repair
    assert str(path) in caplog.text and "feature 0" in caplog.text
    # Writing an invalid polygon repairs it too: QuPath never receives an invalid one.
    written = make_feature(shapely.from_geojson(json.dumps(bowtie)), name="qupath-rkd b")
    assert shapely.from_geojson(json.dumps(written["geometry"])).is_valid


def test_reads_every_form_qupath_wrote() -> None:
    square = {"type": "Polygon", "coordinates": [[[0, 0], [4, 0], [4, 4], [0, 4], [0, 0]]]}
    v02 = {  # QuPath 0.2: object type in "id", measurement list, legacy classification
        "type": "Feature",
        "id": "PathDetectionObject",
        "geometry": square,
        "properties": {
            "classification": {"name": "Tumor", "colorRGB": -3670016},
            "measurements": [{"name": "a", "value": 1.5}, {"name": "b", "value": None}],
        },
    }
    v03 = {  # QuPath 0.3: object_type
        "type": "Feature",
        "geometry": square,
        "properties": {"object_type": "tile", "classification": "Stroma"},
    }
    v05 = {  # QuPath 0.4+: derived class with names
        "type": "Feature",
        "id": "0d0bdc6b-16b4-4a4a-9f1f-9d0a8e6f7f01",
        "geometry": square,
        "properties": {
            "objectType": "annotation",
            "classification": {"names": ["Tumor", "Positive"], "color": [250, 62, 62]},
            "isLocked": True,
            "measurements": {"Area µm^2": 16},
        },
    }
    no_type = {"type": "Feature", "geometry": square, "properties": {}}
    objs = parse_features([v02, v03, v05, no_type])
    assert [o.object_type for o in objs] == ["detection", "tile", "annotation", "annotation"]
    assert objs[0].class_name == "Tumor" and objs[0].color == (200, 0, 0)
    assert objs[0].measurements["a"] == 1.5 and math.isnan(objs[0].measurements["b"])
    assert objs[0].object_id is None  # a 0.2 type name is not an object id
    assert objs[1].class_name == "Stroma" and objs[1].color is None
    assert objs[2].class_name == "Tumor: Positive" and objs[2].class_names == ("Tumor", "Positive")
    assert objs[2].is_locked and objs[2].measurements == {"Area µm^2": 16.0}
    assert objs[3].class_name is None
    # A bare Feature, a FeatureCollection and a bare geometry read the same.
    assert len(parse_features(v05)) == 1
    assert len(parse_features({"type": "FeatureCollection", "features": [v05, v03]})) == 2
    assert parse_features(square)[0].object_type == "annotation"


def test_classification_without_colour_is_refused_with_file_and_feature(tmp_path: Path) -> None:
    path = tmp_path / "no-colour.geojson"
    feats = [make_feature(box(0, 0, 1, 1), object_type="annotation", class_name="Tumor")] * 2
    feats = json.loads(json.dumps(feats))
    del feats[1]["properties"]["classification"]["color"]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    with pytest.raises(AnnotationError) as info:
        read_geojson(path)
    message = str(info.value)
    assert str(path) in message and "feature 1" in message and "colour" in message
    assert '"color"' in message and "\n" not in message  # says how to fix it


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe\x00garbage", "not a text file"),
        (b'{"type": "Topology", "objects": {}}', "not GeoJSON"),
        (b"42", "not GeoJSON"),
        (b'{"type": "FeatureCollection"}', "without a 'features' list"),
        (b'[{"type": "Feature", "properties": {}}]', "no geometry"),
        (
            b'[{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": 5}}]',
            "unreadable geometry",
        ),
        (
            b'[{"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]},'
            b' "properties": {"measurements": {"a": "high"}}}]',
            "not a number",
        ),
    ],
)
def test_bad_files_give_one_line_errors_naming_the_file(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / "bad.geojson"
    path.write_bytes(content)
    with pytest.raises(AnnotationError) as info:
        read_geojson(path)
    assert expected in str(info.value) and str(path) in str(info.value)
    assert "\n" not in str(info.value)
    assert path.read_bytes() == content  # reading never touches the file


def test_missing_file_is_an_annotation_error(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match="not found"):
        read_geojson(tmp_path / "none.geojson")


def test_shift_moves_geometry_both_ways(tmp_path: Path) -> None:
    feat = make_feature(box(10, 20, 30, 40), name="qupath-rkd s")
    path = tmp_path / "s.geojson"
    write_geojson(path, [feat], shift_px=(-5, -7))
    (raw,) = read_geojson(path)
    assert raw.geometry.equals(box(5, 13, 25, 33))
    (back,) = read_geojson(path, shift_px=(5, 7))
    assert back.geometry.equals(box(10, 20, 30, 40))


def test_stable_ids_give_byte_identical_files() -> None:
    def build() -> str:
        feats = [
            make_feature(
                box(i, i, i + 5, i + 5),
                class_name="Tumor",
                name="qupath-rkd lesion",
                measurements={"p": 0.5},
                feature_id=stable_feature_id("1", "model", i),
            )
            for i in range(3)
        ]
        return features_to_json(feats)

    assert build() == build()
    assert len({stable_feature_id("1", "m", i) for i in range(100)}) == 100


def test_make_feature_refuses_what_qupath_cannot_take() -> None:
    with pytest.raises(AnnotationError, match="finite"):
        make_feature(box(0, 0, 1, 1), measurements={"p": float("nan")})
    with pytest.raises(AnnotationError, match="object type"):
        make_feature(box(0, 0, 1, 1), object_type="root")
    with pytest.raises(AnnotationError, match="empty"):
        make_feature(Polygon())
    derived = make_feature(box(0, 0, 1, 1), class_name="Tumor: Positive", color=(1, 2, 3))
    assert derived["properties"]["classification"] == {
        "names": ["Tumor", "Positive"],
        "color": [1, 2, 3],
    }


def test_tool_objects_are_detections_named_by_the_tool() -> None:
    assert is_tool_object("detection", "qupath-rkd lesion 1")
    assert is_tool_object("tile", "qupath-rkd tile")
    assert not is_tool_object("annotation", "qupath-rkd lesion 1")  # never a pathologist's
    assert not is_tool_object("detection", "my lesion")
    assert not is_tool_object("detection", None)


def test_real_camelyon16_polygons_round_trip(real_data: Path, tmp_path: Path) -> None:
    """Real lesion outlines (Camelyon16, level-0 px) survive write + read as QuPath GeoJSON."""
    folder = real_data / "camelyon16-annotations" / "train"
    polygons = []
    for name in ("Tumor_001.json", "Tumor_002.json", "Tumor_016.json"):
        data = json.loads((folder / name).read_text())
        polygons += [Polygon(p["vertices"]) for p in data["positive"] if len(p["vertices"]) >= 3]
    assert len(polygons) >= 5
    feats = [make_feature(p, object_type="annotation", class_name="Tumor") for p in polygons]
    path = tmp_path / "c16.geojson"
    write_geojson(path, feats)
    assert_qupath_importable(json.loads(path.read_text()))
    objs = read_geojson(path)
    assert all(o.geometry.is_valid for o in objs)
    total_in = sum(shapely.make_valid(p).area for p in polygons)
    total_out = sum(o.geometry.area for o in objs)
    assert total_out == pytest.approx(total_in, rel=1e-4)


def test_qupath_import_problems_finds_what_qupath_would_refuse() -> None:
    from qupath_rkd.qupath.geojson import qupath_import_problems

    good = json.loads(
        features_to_json(
            [
                make_feature(
                    box(0, 0, 5, 5),
                    class_name="Tumor",
                    name="qupath-rkd a",
                    measurements={"p": 0.5},
                ),
                make_feature(
                    shapely.MultiPolygon([box(0, 0, 1, 1), box(3, 3, 4, 4)]), name="qupath-rkd b"
                ),
            ]
        )
    )
    assert qupath_import_problems(good) == []
    bad = json.loads(json.dumps(good))
    bad["features"][1]["id"] = bad["features"][0]["id"]
    del bad["features"][0]["properties"]["classification"]["color"]
    bad["features"][0]["properties"]["measurements"]["q"] = "high"
    del bad["features"][1]["properties"]["objectType"]
    bad["features"].append(
        {
            "type": "Feature",
            "id": "x",
            "geometry": {"type": "MultiPolygon", "coordinates": []},
            "properties": {"objectType": "detection"},
        }
    )
    problems = qupath_import_problems(bad)
    text = "\n".join(problems)
    assert "feature 0: classification without an RGB colour" in text
    assert "feature 0: measurement 'q'" in text
    assert "feature 1: id" in text and "used twice" in text
    assert "feature 1: objectType None" in text
    assert "feature 2: id 'x' is not a UUID" in text and "MultiPolygon" not in text
    twice = json.loads(json.dumps(good))
    twice["features"].append(dict(twice["features"][1], id=str(uuid.uuid4())))
    assert qupath_import_problems(twice) == ["feature 2: a second detection named 'qupath-rkd b'"]
    assert qupath_import_problems([]) == ["not a FeatureCollection"]


def test_stable_feature_ids_are_stable_feature_id_for_each_index() -> None:
    from qupath_rkd.qupath.geojson import stable_feature_ids

    ids = stable_feature_ids("key", "slide é", "tile", count=1200)
    assert ids == [stable_feature_id("key", "slide é", "tile", i) for i in range(1200)]
    assert stable_feature_ids("a", count=0) == []


def test_square_geometries_json_is_the_geometry_of_a_shapely_box() -> None:
    import random

    from qupath_rkd.qupath.geojson import square_geometries_json

    rng = random.Random(3)
    xs = [0.0, 1.005, 2.675, -0.004999, 1e6 + 0.125] + [rng.uniform(-1e4, 1e5) for _ in range(500)]
    ys = [0.0, 3.0, 0.015, 7.5, 255.995] + [rng.uniform(0, 1e5) for _ in range(500)]
    for side in (256.0, 41.70913, 0.01):
        fast = square_geometries_json(xs, ys, side)
        slow = [
            make_feature(box(x, y, x + side, y + side), object_type="tile")["geometry"]
            for x, y in zip(xs, ys, strict=True)
        ]
        assert json.dumps(fast) == json.dumps(slow)
