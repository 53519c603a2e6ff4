"""The Camelyon16 FROC against an independent brute-force reference on small random cases.

The reference below re-derives every step from the organisers' definition with plain loops
(pairwise distances, breadth-first flood fill and labelling, explicit moments, explicit counts)
and shares no code with ``qupath_rkd.evaluation``.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pytest
from shapely.geometry import box

from qupath_rkd.evaluation.camelyon16 import (
    evaluation_mask,
    froc,
    score_detections,
)

MPP = 0.243
DS = 32  # level 5
GROW_PX = 75 / (MPP * DS * 2)  # 4.82 mask px
ITC_PX = 275 / (MPP * DS)  # 35.4 mask px


# ---------------------------------------------------------------- brute-force reference ------
def bf_grown(tumour: np.ndarray) -> np.ndarray:
    pts = np.argwhere(tumour)
    rows, cols = tumour.shape
    out = np.zeros_like(tumour)
    for r in range(rows):
        for c in range(cols):
            d = np.sqrt(((pts - [r, c]) ** 2).sum(axis=1)).min()
            out[r, c] = d < GROW_PX
    return out


def bf_fill_holes(fg: np.ndarray) -> np.ndarray:
    rows, cols = fg.shape
    outside = np.zeros_like(fg)
    queue = deque(
        (r, c)
        for r in range(rows)
        for c in range(cols)
        if (r in (0, rows - 1) or c in (0, cols - 1)) and not fg[r, c]
    )
    for r, c in queue:
        outside[r, c] = True
    while queue:
        r, c = queue.popleft()
        for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            rr, cc = r + dr, c + dc
            if 0 <= rr < rows and 0 <= cc < cols and not fg[rr, cc] and not outside[rr, cc]:
                outside[rr, cc] = True
                queue.append((rr, cc))
    return ~outside


def bf_components(fg: np.ndarray) -> list[set[tuple[int, int]]]:
    seen: set[tuple[int, int]] = set()
    comps = []
    rows, cols = fg.shape
    for r in range(rows):
        for c in range(cols):
            if fg[r, c] and (r, c) not in seen:
                comp = {(r, c)}
                seen.add((r, c))
                queue = deque([(r, c)])
                while queue:
                    a, b = queue.popleft()
                    for da in (-1, 0, 1):
                        for db in (-1, 0, 1):
                            p = (a + da, b + db)
                            if 0 <= p[0] < rows and 0 <= p[1] < cols and fg[p] and p not in seen:
                                seen.add(p)
                                comp.add(p)
                                queue.append(p)
                comps.append(comp)
    return comps


def bf_major_axis(comp: set[tuple[int, int]]) -> float:
    pts = np.array(sorted(comp), dtype=float)
    d = pts - pts.mean(axis=0)
    a = (d[:, 0] ** 2).mean()
    b = (d[:, 1] ** 2).mean()
    c = (d[:, 0] * d[:, 1]).mean()
    lam = (a + b) / 2 + math.sqrt(((a - b) / 2) ** 2 + c * c)
    return 4 * math.sqrt(lam)


def bf_froc(slides: list[dict]) -> tuple[float, list[float]]:
    """slides: dicts with 'tumour' (bool mask or None) and 'dets' [(p, x, y)]."""
    fp_all: list[float] = []
    best_all: list[float] = []
    n_lesions = 0
    for s in slides:
        if s["tumour"] is None:
            fp_all += [p for p, _, _ in s["dets"]]
            continue
        comps = bf_components(bf_fill_holes(bf_grown(s["tumour"])))
        itc = [bf_major_axis(comp) < ITC_PX for comp in comps]
        best = [0.0] * len(comps)
        for p, x, y in s["dets"]:
            pix = (int(y / DS), int(x / DS))
            k = next((i for i, comp in enumerate(comps) if pix in comp), None)
            if k is None:
                fp_all.append(p)
            elif not itc[k]:
                best[k] = max(best[k], p)
        best_all += best  # ITC entries stay 0, as in the organisers' array
        n_lesions += sum(not i for i in itc)
    thresholds = sorted(set(fp_all) | set(best_all))[1:]
    fps = [sum(p >= t for p in fp_all) / len(slides) for t in thresholds] + [0.0]
    sens = [sum(b >= t for b in best_all) / n_lesions for t in thresholds] + [0.0]
    targets = [0.25, 0.5, 1, 2, 4, 8]
    # linear interpolation written out: fps is non-increasing in threshold order
    pairs = sorted(zip(fps, sens, strict=True))
    at = []
    for f in targets:
        if f <= pairs[0][0]:
            at.append(pairs[0][1])
        elif f >= pairs[-1][0]:
            at.append(pairs[-1][1])
        else:
            i = max(k for k, (x, _) in enumerate(pairs) if x <= f)
            # np.interp uses the last of equal x values on the left; pick right neighbour > f
            j = min(k for k, (x, _) in enumerate(pairs) if x > f)
            (x0, y0), (x1, y1) = pairs[i], pairs[j]
            at.append(y0 + (y1 - y0) * (f - x0) / (x1 - x0))
    return float(np.mean(at)), at


# ---------------------------------------------------------------- random small cases ---------
def random_slide(rng: np.random.Generator, size: int = 100, max_side: int = 30):
    """Grid-aligned tumour squares (so pixel-centre rasterisation is unambiguous) + detections.

    About 40 % of the squares are small enough to be isolated tumour cells.
    """
    tumour = np.zeros((size, size), bool)
    polys = []
    for _ in range(rng.integers(2, 6)):
        if rng.random() < 0.4:
            h, w = rng.integers(1, 6, size=2)
        else:
            h, w = rng.integers(10, max_side, size=2)
        r, c = rng.integers(0, size - max_side, size=2)
        tumour[r : r + h, c : c + w] = True
        polys.append(box(c * DS, r * DS, (c + w) * DS, (r + h) * DS))
    dets = []
    for _ in range(rng.integers(0, 12)):
        if rng.random() < 0.6 and tumour.any():  # aim at tumour
            r, c = np.argwhere(tumour)[rng.integers(tumour.sum())]
        else:
            r, c = rng.integers(0, size, size=2)
        x = c * DS + rng.uniform(0, DS - 1e-6)
        y = r * DS + rng.uniform(0, DS - 1e-6)
        dets.append((float(rng.random()), float(x), float(y)))
    return tumour, polys, dets


@pytest.mark.parametrize("seed", range(6))
def test_froc_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    slides_bf, per_slide = [], []
    for k in range(4):
        if k == 3:  # one normal slide with detections
            dets = [
                (float(rng.random()), float(rng.uniform(0, 1000)), float(rng.uniform(0, 1000)))
                for _ in range(3)
            ]
            slides_bf.append({"tumour": None, "dets": dets})
            arr = np.array(dets).reshape(-1, 3)
            per_slide.append(score_detections("n", arr[:, 0], arr[:, 1], arr[:, 2], None))
            continue
        tumour, polys, dets = random_slide(rng)
        slides_bf.append({"tumour": tumour, "dets": dets})
        size_px = (tumour.shape[1] * DS, tumour.shape[0] * DS)
        mask = evaluation_mask(polys, mpp=MPP, slide_size_px=size_px)
        arr = np.array(dets).reshape(-1, 3)
        per_slide.append(score_detections(f"t{k}", arr[:, 0], arr[:, 1], arr[:, 2], mask))
    if sum(s.n_lesions for s in per_slide) == 0:
        pytest.skip("this draw has only ITCs")  # pragma: no cover - seeds chosen to avoid it
    want_score, want_at = bf_froc(slides_bf)
    got = froc(per_slide)
    assert list(got.sensitivity_at.values()) == pytest.approx(want_at, abs=1e-12)
    assert got.score == pytest.approx(want_score, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_evaluation_mask_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    tumour, polys, _ = random_slide(rng, size=60, max_side=25)
    size_px = (tumour.shape[1] * DS, tumour.shape[0] * DS)
    mask = evaluation_mask(polys, mpp=MPP, slide_size_px=size_px)
    comps = bf_components(bf_fill_holes(bf_grown(tumour)))
    got = {
        frozenset(map(tuple, np.argwhere(mask.labels == k))) for k in range(1, mask.n_instances + 1)
    }
    assert got == {frozenset(c) for c in comps}
    want_itc = {frozenset(c) for c in comps if bf_major_axis(c) < ITC_PX}
    got_itc = {frozenset(map(tuple, np.argwhere(mask.labels == k))) for k in mask.itc_labels}
    assert got_itc == want_itc
    # Without the slide size, the cropped mask gives the same instances at the same places.
    cropped = evaluation_mask(polys, mpp=MPP)
    pts = rng.uniform(0, size_px[0], size=(200, 2))
    a = mask.label_at(pts[:, 0], pts[:, 1])
    b = cropped.label_at(pts[:, 0], pts[:, 1])
    assert np.array_equal(a > 0, b > 0)
    assert len({(i, j) for i, j in zip(a, b, strict=True)}) == len(set(a.tolist()))


def test_ring_hole_is_filled_and_growth_merges_close_lesions() -> None:
    # A ring 2 mask px wide around a 26-px hole: growth (4.82 px) cannot close it, filling does.
    ring = [
        box(0, 0, 30 * DS, 2 * DS),
        box(0, 28 * DS, 30 * DS, 30 * DS),
        box(0, 0, 2 * DS, 30 * DS),
        box(28 * DS, 0, 30 * DS, 30 * DS),
    ]
    size = (60 * DS, 60 * DS)
    mask = evaluation_mask(ring, mpp=MPP, slide_size_px=size)
    assert mask.n_instances == 1
    assert mask.labels[15, 15] == 1  # the middle of the hole
    # Growth by < 4.82 px on each side closes a gap of 8 empty pixels, not one of 9.
    near = [box(0, 0, 12 * DS, 12 * DS), box(20 * DS, 0, 32 * DS, 12 * DS)]  # 8-px gap
    far = [box(0, 0, 12 * DS, 12 * DS), box(21 * DS, 0, 33 * DS, 12 * DS)]  # 9-px gap
    assert evaluation_mask(near, mpp=MPP, slide_size_px=size).n_instances == 1
    assert evaluation_mask(far, mpp=MPP, slide_size_px=size).n_instances == 2


def test_only_the_best_hit_per_lesion_counts_and_itc_hits_are_ignored() -> None:
    big = box(0, 0, 40 * DS, 40 * DS)  # grown: ~48 px square, major axis ~56 px > 35.4 px
    itc = box(50 * DS, 50 * DS, 51 * DS, 51 * DS)  # one pixel: grown disc ~10 px < 35.4 px
    mask = evaluation_mask([big, itc], mpp=MPP, slide_size_px=(60 * DS, 60 * DS))
    assert mask.n_instances == 2 and len(mask.itc_labels) == 1 and mask.n_lesions == 1
    probs = np.array([0.9, 0.8, 0.7, 0.6])
    xs = np.array([5, 6, 50.5, 58]) * DS
    ys = np.array([5, 6, 50.5, 2]) * DS
    det = score_detections("s", probs, xs, ys, mask)
    assert det.fp_probs.tolist() == [0.6]  # outside any lesion
    assert det.n_itc_hits == 1
    assert sorted(det.tp_probs.tolist()) == [0.0, 0.9]  # second hit on the big lesion dropped
    normal = score_detections("n", probs, xs, ys, None)
    assert normal.fp_probs.tolist() == probs.tolist()
    result = froc([det, normal])
    # thresholds: {0, 0.6, 0.7, 0.8, 0.9} minus the lowest; at 0.9: 1 FP (normal) / 2 slides.
    assert result.fps_per_slide.tolist() == [2.5, 1.5, 1.0, 0.5, 0.0]
    assert result.sensitivity.tolist() == [1.0, 1.0, 1.0, 1.0, 0.0]
