"""`predict --tumor-free` keeps the tumour-free slides' heatmaps and reuses them on the next run
(issue 10: it used to score them again on every run), but only while the model, the heatmap
settings and the slide file are the same."""

from __future__ import annotations

import os
import shutil

import pytest

import qupath_rkd.inference.batch as batch
from qupath_rkd.inference import InferenceConfig
from qupath_rkd.outputs import TUMOR_FREE_DIR

from .conftest import INPUT_PX


@pytest.fixture()
def counted(monkeypatch):
    """Count predict_slide calls per slide file name."""
    calls: list[str] = []
    real = batch.predict_slide

    def counting(path, *args, **kwargs):
        calls.append(os.path.basename(str(path)))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(batch, "predict_slide", counting)
    return calls


def test_tumour_free_heatmaps_are_reused_until_something_changes(
    tmp_path, model, semireal, blank_slide, counted
) -> None:
    negative = tmp_path / "negative.tif"
    shutil.copy(semireal.path, negative)
    out = tmp_path / "out"
    cfg = InferenceConfig(num_workers=0)

    def run(config=cfg, target=0.25):
        return batch.predict_slides(
            [blank_slide],
            model,
            out,
            config=config,
            overwrite=True,
            tumor_free=[negative],
            target_fp_per_slide=target,
        )

    run()
    assert counted.count("negative.tif") == 1
    assert (out / TUMOR_FREE_DIR / "negative.json").is_file()
    first = (out / "run.json").read_text()

    counted.clear()
    run()  # nothing changed: the stored heatmap sets the same operating point
    assert counted == ["blank.tif"]
    assert (out / "run.json").read_text().split('"operating_point"')[1].split("}")[0] == (
        first.split('"operating_point"')[1].split("}")[0]
    )

    counted.clear()
    run(target=1.0)  # another target rate needs no new heatmap
    assert "negative.tif" not in counted

    counted.clear()
    run(config=InferenceConfig(num_workers=0, stride_px=INPUT_PX))  # another grid
    assert counted.count("negative.tif") == 1

    counted.clear()
    st = negative.stat()
    os.utime(negative, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the slide file changed
    run(config=InferenceConfig(num_workers=0, stride_px=INPUT_PX))
    assert counted.count("negative.tif") == 1


def test_a_damaged_stored_heatmap_is_scored_again(
    tmp_path, model, semireal, blank_slide, counted
) -> None:
    out = tmp_path / "out"
    kwargs = dict(config=InferenceConfig(num_workers=0), tumor_free=[semireal.path])
    batch.predict_slides([blank_slide], model, out, **kwargs)
    (out / TUMOR_FREE_DIR / "semireal_a.npy").write_bytes(b"not an array")
    counted.clear()
    batch.predict_slides([blank_slide], model, out, overwrite=True, **kwargs)
    assert counted.count("semireal_a.tif") == 1
