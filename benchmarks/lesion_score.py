"""Which score ranks a lesion in the FROC: the lesion FROC at the seed 0.5 (lesions only, the
default post-processing) with each lesion scored by its maximum (the default), mean, the mean
of its top 3 cells, its second-highest cell, max x sqrt(cells / 9) capped at 1, or its
probability mass; from the heatmaps ``slide_quality.py --cache`` stored (no model is run).

    PYTHONPATH=$PWD python benchmarks/lesion_score.py benchmarks/out/slide_set_4000 \
        benchmarks/out/slide_quality_model/cache4000_head100_std3
"""

import pickle
import sys
from pathlib import Path

import numpy as np
from shapely.geometry import Point

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from slide_quality import set_slides

from qupath_rkd.evaluation.camelyon16 import evaluation_mask, froc, score_detections
from qupath_rkd.lesions.pipeline import find_lesions
from qupath_rkd.lesions.postprocess import PostProcessing

set_dir, cache = Path(sys.argv[1]), Path(sys.argv[2])
slides = set_slides(set_dir)
with open(cache / "heatmaps_s96_v1.pkl", "rb") as fh:
    hms = pickle.load(fh)
post = PostProcessing(
    smooth_sigma_um=0.0, extent_ratio=1.0, min_major_axis_um=200.0, extent_cap=0.5
)
rules = {
    "max": lambda le, p: le.max_probability,
    "mean": lambda le, p: le.mean_probability,
    "top3": lambda le, p: float(np.mean(np.sort(p)[-3:])),
    "second": lambda le, p: float(np.sort(p)[-2]) if len(p) > 1 else float(p[0]) / 2,
    "max*sqrt(n)": lambda le, p: le.max_probability * min(1.0, np.sqrt(le.n_cells / 9)),
    "mass": lambda le, p: float(np.sum(p)),
}
dets = {r: [] for r in rules}
for s in slides:
    hm = hms[s["slide_id"]]
    found = find_lesions(hm, 0.5, post)
    mask = (
        evaluation_mask(s["tumor"], mpp=s["mpp"], slide_size_px=s["size"]) if s["tumor"] else None
    )
    prob = found.smoothed.probability
    x = np.array([le.peak_xy_px[0] for le in found.lesions])
    y = np.array([le.peak_xy_px[1] for le in found.lesions])
    for r, f in rules.items():
        sc = []
        for le in found.lesions:
            # cells of the lesion: those inside its polygon at the heatmap grid
            rows, cols = np.nonzero(np.nan_to_num(prob, nan=0) >= 0.5)
            st = hm.stride_level0_px
            ox, oy = hm.origin_xy_px
            cx = ox + (cols + 0.5) * st
            cy = oy + (rows + 0.5) * st
            inside = np.array(
                [le.polygon.contains(Point(a, b)) for a, b in zip(cx, cy, strict=True)]
            )
            sc.append(
                f(
                    le,
                    prob[rows[inside], cols[inside]]
                    if inside.any()
                    else np.array([le.max_probability]),
                )
            )
        dets[r].append(score_detections(s["slide_id"], np.array(sc), x, y, mask))
for r in rules:
    res = froc(dets[r])
    print(r, round(res.score, 4), {k: round(v, 3) for k, v in res.sensitivity_at.items()})
