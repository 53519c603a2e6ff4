"""Renamed ``InferenceConfig`` fields (``tile_mpp``, ``min_major_axis_um``) keep the names the
outputs on disk record, so a ``predict`` folder or a synced project written before the rename
is still found done (not predicted again) and its ``run.json`` / ``done.json`` read the same."""

from __future__ import annotations

import dataclasses

from qupath_rkd.inference.predict import RECORDED_NAMES, InferenceConfig

MODEL_ID = "m" * 64


def _config() -> InferenceConfig:
    return InferenceConfig(
        tile_mpp=0.5,
        tile_px=64,
        stride_px=32,
        min_tissue_fraction=0.25,
        slide_mpp=0.25,
        tta_views=2,
        min_major_axis_um=150.0,
    )


def test_heatmap_key_is_the_one_written_before_the_rename() -> None:
    # computed with the code before the rename: InferenceConfig(mpp=0.5, ..., min_lesion_um=150)
    before = "1f9375079949804e34a8ef91775f48f71648059d94571085fc0ef6d00ab43da3"
    assert _config().heatmap_key(MODEL_ID) == before


def test_record_uses_the_recorded_names() -> None:
    cfg = _config()
    record = cfg.as_record()
    assert record["mpp"] == cfg.tile_mpp and record["min_lesion_um"] == cfg.min_major_axis_um
    assert not set(RECORDED_NAMES) & set(record)
    # every field but return_features (what is returned, not what is predicted)
    fields = {f.name for f in dataclasses.fields(cfg)} - {"return_features"}
    assert set(record) == {RECORDED_NAMES.get(name, name) for name in fields}
    # the outputs key follows the record: a renamed value still changes it
    assert cfg.key(MODEL_ID) != dataclasses.replace(cfg, min_major_axis_um=151.0).key(MODEL_ID)
    assert cfg.key(MODEL_ID) != dataclasses.replace(cfg, tile_mpp=0.25).key(MODEL_ID)
