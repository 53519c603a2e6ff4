"""Issue 12, Deliver 1 (part): each stage's config built from sync's defaults is compared with
that class's own defaults; every difference is listed here with its reason, so a default
changed in one place only fails a test, naming the field."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import click

from qupath_rkd.sync.config import load_config

#: TrainConfig fields that sync's defaults set to something else on purpose.
TRAIN_DELIBERATE = {
    "tile_px": "sync's tiles are labels.tile_px; TrainConfig's None means the network's input "
    "size (train-patches records the patches' own side)",
    "mpp": "sync trains at labels.mpp; TrainConfig's None means the patches' own µm/px",
    "epochs": "derived from training.steps and the number of labelled tiles",
    "max_steps_per_epoch": "derived from training.steps",
    "validate_every_steps": "about four validations over training.steps",
    "lr": "DEFAULT_SYNC_RD_LR vs DEFAULT_RD_LR (qupath_rkd/constants.py says why: 300 steps "
    "vs 10 epochs)",
    "head": "DEFAULT_SYNC_HEAD vs DEFAULT_HEAD (qupath_rkd/constants.py says why: sync's output "
    "is whole-slide lesions, where the ensemble head measured no better)",
}


def test_train_config_from_sync_defaults_equals_train_config_defaults() -> None:
    from qupath_rkd.sync.runner import _train_config
    from qupath_rkd.training.config import TrainConfig

    built = asdict(_train_config(load_config(None), n_train=100))
    own = asdict(TrainConfig())
    differ = {k: (built[k], own[k]) for k in own if built[k] != own[k]}
    unexplained = {k: v for k, v in differ.items() if k not in TRAIN_DELIBERATE}
    assert not unexplained, f"sync's training defaults vs TrainConfig's: {unexplained}"
    stale = sorted(set(TRAIN_DELIBERATE) - set(differ))
    assert not stale, f"listed as deliberate but now equal (drop from the list): {stale}"


#: predict option -> InferenceConfig field (same quantity).
PREDICT_TO_INFERENCE = {
    "tile_mpp": "tile_mpp",
    "slide_mpp": "slide_mpp",
    "tile_px": "tile_px",
    "stride_px": "stride_px",
    "threshold": "threshold",
    "slide_score": "slide_score",
    "smooth_um": "smooth_sigma_um",
    "extent_ratio": "extent_ratio",
    "tta_views": "tta_views",
    "min_lesion_um": "min_major_axis_um",
    "simplify_um": "simplify_um",
    "min_tissue": "min_tissue_fraction",
    "batch_size": "batch_size",
    "workers": "num_workers",
}

#: predict option -> sync setting (same quantity; "auto" in sync's file means None).
PREDICT_TO_SYNC = {
    "stride_px": "inference.stride_px",
    "threshold": "inference.threshold",
    "slide_score": "inference.slide_score",
    "smooth_um": "inference.smooth_um",
    "extent_ratio": "inference.extent_ratio",
    "tta_views": "inference.tta_views",
    "min_lesion_um": "inference.min_lesion_um",
    "target_fp_per_slide": "inference.target_fp_per_slide",
    "batch_size": "inference.batch_size",
    "min_tissue": "labels.min_tissue_fraction",
    "device": "sync.device",
}


def _predict_defaults() -> dict[str, Any]:
    from qupath_rkd.cli.predict import predict

    out = {}
    for param in predict.params:
        if isinstance(param, click.Option) and not param.multiple and not param.is_flag:
            if param.default is None:
                out[str(param.name)] = None
            elif not isinstance(param.default, type(click.Option(["--x"]).default)):
                ctx = click.Context(predict)
                out[str(param.name)] = param.type_cast_value(ctx, param.default)
    return out


def test_predict_options_default_to_inference_config_and_sync() -> None:
    from qupath_rkd.inference.predict import InferenceConfig

    cli = _predict_defaults()
    cli["tta_views"] = int(cli["tta_views"])  # a click.Choice of strings ("1", "8", ...)
    own = asdict(InferenceConfig())
    differ = {
        opt: (cli[opt], own[field])
        for opt, field in PREDICT_TO_INFERENCE.items()
        if cli[opt] != own[field] or type(cli[opt]) is not type(own[field])
    }
    assert not differ, f"predict --help vs InferenceConfig: {differ}"

    config = load_config(None)
    differ = {}
    for opt, key in PREDICT_TO_SYNC.items():
        value = config.get(key)
        value = None if value == "auto" and cli[opt] != "auto" else value
        if value != cli[opt]:
            differ[key] = (value, cli[opt])
    assert not differ, f"sync's defaults vs predict --help: {differ}"


#: train-patches option -> TrainConfig field (same quantity).
TRAIN_PATCHES_TO_TRAIN_CONFIG = {
    "teacher": "teacher",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "seed": "seed",
    "device": "device",
    "lr": "lr",
    "balance": "balance_batches",
    "augment": "augment",
    "shortcut": "shortcut",
    "score_reduction": "score_reduction",
    "scorer": "scorer",
    "tta_views": "tta_views",
    "input_px": "input_px",
}


def test_train_patches_help_defaults_equal_train_config() -> None:
    from qupath_rkd.cli.train_patches import train_patches
    from qupath_rkd.training.config import TrainConfig

    params = {p.name: p for p in train_patches.params if isinstance(p, click.Option)}
    own = asdict(TrainConfig())
    differ = {}
    for opt, field in TRAIN_PATCHES_TO_TRAIN_CONFIG.items():
        default = params[opt].default
        default = None if default is None or not isinstance(default, (str, int, float)) else default
        default = int(default) if opt == "tta_views" else default
        if default != own[field]:
            differ[opt] = (default, own[field])
    assert not differ, f"train-patches --help vs TrainConfig: {differ}"


def test_sync_schema_choices_are_the_stage_lists() -> None:
    from qupath_rkd.features.trunk import TRUNKS
    from qupath_rkd.model.teachers import TEACHERS
    from qupath_rkd.sync.config import SCHEMA
    from qupath_rkd.training.config import TrainConfig

    teachers = SCHEMA["training"]["teacher"].choices
    assert set(teachers) == set(TRUNKS) | set(TEACHERS), "a teacher list drifted"
    assert SCHEMA["training"]["teacher"].default == TrainConfig().teacher
    assert SCHEMA["training"]["scorer"].default == TrainConfig().scorer


def test_sync_refuses_a_model_trained_for_other_tiles(tmp_path) -> None:
    """Issue 12, Deliver 2: sync's inference reads the checkpoint's tiles; a model whose
    recorded tiles disagree with labels.tile_px / labels.mpp is refused in one line."""
    from types import SimpleNamespace

    import pytest

    from qupath_rkd.errors import ConfigError
    from qupath_rkd.sync.runner import check_model_scale, inference_config

    config = load_config(None)
    mpp, tile_px = config.get("labels.mpp"), config.get("labels.tile_px")
    check_model_scale(config, SimpleNamespace(mpp=mpp, tile_px=tile_px), tmp_path / "m.pt")
    for wrong in ({"mpp": mpp * 2, "tile_px": tile_px}, {"mpp": mpp, "tile_px": tile_px * 2}):
        with pytest.raises(ConfigError, match=r"labels\.tile_px") as err:
            check_model_scale(config, SimpleNamespace(**wrong), tmp_path / "m.pt")
        assert "\n" not in err.value.one_line()
    inf = inference_config(config, None)
    assert inf.tile_mpp is None and inf.tile_px is None, "sync must read tiles from the checkpoint"
