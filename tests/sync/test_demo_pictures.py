"""Issue 11, point 3: the demo draws, per slide, the heatmap with the truth and the predicted
lesions, and the FROC curve — from what sync wrote, without predicting again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def test_pictures_of_a_synced_demo_show_truth_on_tumour_slides_only(
    small_demo, synced_copy: Path
) -> None:
    import dataclasses

    from qupath_rkd.demo.pictures import write_demo_pictures
    from qupath_rkd.demo.project import demo_froc

    # the small demo's slides and truth, the synced copy's predictions
    demo = dataclasses.replace(small_demo, root=synced_copy.parent, project_dir=synced_copy)
    froc, _ = demo_froc(demo)
    made = write_demo_pictures(demo, froc, threshold=0.5)
    assert len(made.overlays) == len(demo.slides) and made.froc is not None
    red: dict[str, int] = {}
    for slide, path in zip(demo.slides, made.overlays, strict=True):
        with Image.open(path) as im:
            assert im.format == "PNG" and min(im.size) >= 200
            a = np.asarray(im.convert("RGB"))
        # the truth outline is pure red; the colour bar and legend hold a little red anyway,
        # so compare slides against each other
        red[slide.spec.name] = int(((a[..., 0] == 255) & (a[..., 1] == 0) & (a[..., 2] == 0)).sum())
    with_tumour = [red[s.spec.name] for s in demo.slides if s.lesions]
    without = [red[s.spec.name] for s in demo.slides if not s.lesions]
    assert with_tumour and without and min(with_tumour) > 2 * max(without)
    with Image.open(made.froc) as im:
        assert im.format == "PNG"
    # a second run with nothing changed rewrites nothing
    mtimes = [p.stat().st_mtime_ns for p in made.overlays]
    again = write_demo_pictures(demo, froc, threshold=0.5)
    assert [p.stat().st_mtime_ns for p in again.overlays] == mtimes
