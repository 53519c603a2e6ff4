"""The supervised head: class-balanced, L2-regularised logistic regression on pooled trunk
features, its fitting, and the choice of its L2 strength from the user's own labels.

Model: ``logit = w . ((f - mean) / std) + b`` for a pooled feature vector ``f`` ``(D,)``
(:mod:`qupath_rkd.features.trunk`); ``mean`` and ``std`` are those of the training features.
The loss is the class-balanced mean binary cross-entropy (tumour and normal weigh half each,
however few tumour patches there are) plus ``l2 / 2 * |w|^2``. It is convex, so the fit has no
early peak to miss and no seed to vary: it is fitted to convergence by L-BFGS in float32 (in a
one-off check, 3.4 times faster than float64 on 10,100 x 3,552 features, the same PCam valid
AUROC to 5 decimals).

Choosing ``l2``: on the validation set when the user gives one; otherwise by stratified, seeded
k-fold cross-validation on the training patches themselves (each patch held out once; with
``groups``, whole groups — annotated regions — are held out together, so a tile's neighbours
never train the model that scores it). The out-of-fold logits also fit the calibration.

With ``slides`` (what ``sync`` passes: its tiles come from a handful of slides) and tumour on two
or more of them, whole slides are held out instead (:func:`slide_folds`) and the grid is scored
by the AUROC of the pooled out-of-fold logits: a new slide's tiles must rank among every other
slide's under one threshold, and that is what a slide held out measures. Measured on the active-
learning projects (25 projects, docs/benchmarks.md): held-out tile AUROC 0.905 against 0.890 when
chosen by regions, which prefer the weak L2 that fits each slide's own differences.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from qupath_rkd.constants import LABEL_NORMAL, LABEL_TUMOR
from qupath_rkd.errors import DataError
from qupath_rkd.model.mlp_head import MlpFit, MlpHead, fit_mlp
from qupath_rkd.progress import ProgressCallback, ProgressTask

#: L2 strengths tried (on standardised features, class-balanced mean loss)
L2_GRID: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


class LinearHead(nn.Module):
    """``(B, D)`` features -> ``(B,)`` logits; buffers ``mean``, ``std`` ``(D,)``, parameters
    ``weight`` ``(D,)`` and ``bias`` ``()``."""

    mean: Tensor
    std: Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.weight = nn.Parameter(torch.zeros(dim), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(()), requires_grad=False)

    def forward(self, feats: Tensor) -> Tensor:
        z = (feats.float() - self.mean) / self.std
        return z @ self.weight + self.bias

    def set_params(self, fit: HeadFit) -> LinearHead:
        """Copy a fitted :class:`HeadFit` into the module."""
        with torch.no_grad():
            self.mean.copy_(torch.from_numpy(fit.mean).float())
            self.std.copy_(torch.from_numpy(fit.std).float())
            self.weight.copy_(torch.from_numpy(fit.weight).float())
            self.bias.fill_(float(fit.bias))
        return self


#: rows per block in :meth:`HeadFit.logits`
_LOGIT_ROWS = 4096


@dataclass
class HeadFit:
    """A fitted head: ``mean``, ``std``, ``weight`` ``(D,)`` float64, ``bias``, ``l2``."""

    mean: np.ndarray
    std: np.ndarray
    weight: np.ndarray
    bias: float
    l2: float

    def logits(self, feats: np.ndarray) -> np.ndarray:
        """``(..., D)`` features -> ``(...)`` logits (float64), computed in float64 in blocks of
        rows (the same numbers as one block, without a float64 copy of all the features)."""
        x = np.asarray(feats)
        flat = x.reshape(-1, x.shape[-1])
        out = np.empty(flat.shape[0], dtype=np.float64)
        for start in range(0, flat.shape[0], _LOGIT_ROWS):
            block = flat[start : start + _LOGIT_ROWS].astype(np.float64)
            out[start : start + _LOGIT_ROWS] = ((block - self.mean) / self.std) @ self.weight
        return (out + self.bias).reshape(x.shape[:-1])


@dataclass
class EnsembleFit:
    """The ensemble head: the logit of ``linear`` averaged with that of ``mlp`` (the perceptron
    on the same standardised features, :mod:`qupath_rkd.model.mlp_head`)."""

    linear: HeadFit
    mlp: MlpFit

    @property
    def l2(self) -> float:
        return self.linear.l2

    def logits(self, feats: np.ndarray) -> np.ndarray:
        """``(..., D)`` features -> ``(...)`` float64 logits: the mean of the two members'."""
        return 0.5 * (self.linear.logits(feats) + self.mlp.logits(feats))


def fit_ensemble(
    feats: np.ndarray, labels: np.ndarray, linear: HeadFit, *, seed: int
) -> EnsembleFit:
    """The ensemble of the fitted ``linear`` head and a perceptron fitted on the same ``(N, D)``
    features and ``(N,)`` labels, with the linear head's standardiser."""
    return EnsembleFit(linear, fit_mlp(feats, labels, linear.mean, linear.std, seed=seed))


def keep_ensemble(head: str, scores: dict[str, float]) -> bool:
    """Whether the ensemble replaces the linear head: always for ``head == "ensemble"``; for
    ``"auto"`` when its AUROC in ``scores`` (``linear``, ``ensemble``: on the validation patches
    or the mean per-fold AUROC) is at least the linear head's."""
    return head == "ensemble" or (head == "auto" and scores["ensemble"] >= scores["linear"])


def standardiser(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std ``(D,)`` of ``(N, D)`` features (std floored at 1e-6)."""
    x = np.asarray(feats, dtype=np.float64)
    return x.mean(axis=0), np.maximum(x.std(axis=0), 1e-6)


def fit_head(
    feats: np.ndarray,
    labels: np.ndarray,
    l2: float,
    *,
    init: HeadFit | None = None,
    max_iter: int = 200,
    normal_weights: np.ndarray | None = None,
) -> HeadFit:
    """Fit the class-balanced logistic head on ``(N, D)`` features and ``(N,)`` 0/1 labels.

    ``normal_weights``: ``(number of normal rows,)`` relative weights of the normal rows in
    their order (each class still carries half the loss); ``None`` = equal. Hard-negative
    mining with it was measured and not adopted (``benchmarks/head_hard_negatives.py``).

    Raises :class:`DataError` unless both classes are present.
    """
    y = (np.asarray(labels) == LABEL_TUMOR).astype(np.float64)
    n_pos, n_neg = float(y.sum()), float(len(y) - y.sum())
    if n_pos == 0 or n_neg == 0:
        raise DataError("the supervised head needs tumour and normal patches")
    mean, std = standardiser(feats)
    x = torch.from_numpy(((np.asarray(feats, dtype=np.float64) - mean) / std).astype(np.float32))
    t = torch.from_numpy(y.astype(np.float32))
    sample_w = torch.where(t > 0, 0.5 / n_pos, 0.5 / n_neg).float()
    if normal_weights is not None:
        wn = np.asarray(normal_weights, dtype=np.float64).reshape(-1)
        if wn.shape != (int(n_neg),) or not np.all(wn >= 0) or wn.sum() <= 0:
            raise ValueError(f"normal_weights must be {int(n_neg)} weights >= 0, not all 0")
        weights = np.where(y > 0, 0.5 / n_pos, 0.0)
        weights[y == 0] = 0.5 * wn / wn.sum()
        sample_w = torch.from_numpy(weights.astype(np.float32))
    dim = x.shape[1]
    w = torch.zeros(dim, dtype=torch.float32, requires_grad=True)
    b = torch.zeros((), dtype=torch.float32, requires_grad=True)
    if init is not None and init.weight.shape == (dim,):
        with torch.no_grad():
            w.copy_(torch.from_numpy(init.weight).float())
            b.fill_(init.bias)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-6,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        opt.zero_grad()
        z = x @ w + b
        bce = nn.functional.binary_cross_entropy_with_logits(z, t, reduction="none")
        loss = (sample_w * bce).sum() + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    weight = w.detach().double().numpy().copy()
    return HeadFit(mean, std, weight, float(b.detach()), float(l2))


def stratified_folds(
    labels: np.ndarray, k: int, seed: int, groups: np.ndarray | None = None
) -> np.ndarray:
    """Fold number ``(N,)`` in ``0..k-1`` for each item: every class spread evenly over the
    folds (seeded), and with ``groups`` every group in one fold (groups of a class dealt out
    round-robin in a seeded order, largest first)."""
    y = np.asarray(labels)
    fold = np.zeros(len(y), dtype=np.int64)
    rng = np.random.default_rng(seed)
    for cls in np.unique(y):
        members = np.flatnonzero(y == cls)
        if groups is None:
            order = rng.permutation(members)
            fold[order] = np.arange(len(order)) % k
            continue
        g = np.asarray(groups)[members]
        names, sizes = np.unique(g, return_counts=True)
        shuffled = rng.permutation(len(names))
        by_size = shuffled[np.argsort(-sizes[shuffled], kind="stable")]
        load = np.zeros(k)
        for gi in by_size:
            f = int(np.argmin(load))
            fold[members[g == names[gi]]] = f
            load[f] += sizes[gi]
    return fold


#: Slide folds are used only when every fold trains on at least this share of each class's
#: items (and :data:`SLIDE_FOLD_MIN_ITEMS` of them): measured, held-out slides scored backwards
#: (pooled AUROC 0.06-0.08) when a fold kept 2 % of a class (3 normal tiles, or 1 tumour tile),
#: and chose well from 5 % (docs/benchmarks.md). A low pooled AUROC alone does not mark a bad
#: choice: fold-to-fold offsets put it at 0.36-0.49 in projects where the slides' L2 was the
#: held-out slides' best
SLIDE_FOLD_MIN_SHARE = 0.05
SLIDE_FOLD_MIN_ITEMS = 5


def slide_folds(labels: np.ndarray, slides: np.ndarray, k: int, seed: int) -> np.ndarray | None:
    """Fold number ``(N,)`` for each item with every slide in one fold, or ``None`` when fewer
    than two slides hold tumour items (``labels == LABEL_TUMOR``; items labelled -1 are
    ignored, as unreadable) or a fold would train on too few of a class (less than
    :data:`SLIDE_FOLD_MIN_SHARE` of its items or :data:`SLIDE_FOLD_MIN_ITEMS`).

    ``min(k, slides)`` folds: the slides with tumour are dealt out first (most tumour items
    first, seeded order among equals) to the fold with the least tumour so far, so the first
    two land in different folds and every fold's complement holds tumour; then the others (the
    most items first) to the fold with the fewest items."""
    y = np.asarray(labels)
    names, slide_of = np.unique(np.asarray(slides), return_inverse=True)
    tumour = np.bincount(slide_of, weights=(y == LABEL_TUMOR), minlength=len(names))
    items = np.bincount(slide_of, weights=(y >= 0), minlength=len(names))
    if int((tumour > 0).sum()) < 2:
        return None
    k = min(int(k), len(names))
    order = np.random.default_rng(seed).permutation(len(names))
    fold_of = np.zeros(len(names), dtype=np.int64)
    tumour_load, item_load = np.zeros(k), np.zeros(k)
    with_tumour = order[tumour[order] > 0]
    without = order[tumour[order] == 0]
    for s in with_tumour[np.argsort(-tumour[with_tumour], kind="stable")]:
        f = int(np.argmin(tumour_load))
        fold_of[s] = f
        tumour_load[f] += tumour[s]
        item_load[f] += items[s]
    for s in without[np.argsort(-items[without], kind="stable")]:
        f = int(np.argmin(item_load))
        fold_of[s] = f
        item_load[f] += items[s]
    folds = fold_of[slide_of]
    for cls in (LABEL_TUMOR, LABEL_NORMAL):
        need = max(SLIDE_FOLD_MIN_ITEMS, SLIDE_FOLD_MIN_SHARE * int((y == cls).sum()))
        if any(int(((y == cls) & (folds != f)).sum()) < need for f in range(k)):
            return None
    return folds


def auroc_of(labels: np.ndarray, scores: np.ndarray) -> float:
    """AUROC (ties counted half) of scores for 0/1 labels; NaN without both classes."""
    from qupath_rkd.model.calibration import auroc

    return float(auroc(np.asarray(labels), np.asarray(scores)))


@dataclass
class L2Choice:
    """The chosen ``l2``, the metric it was chosen by, its value per grid point and the rule
    (``best``: the best value; ``one_se``: see :func:`cross_validate_l2`)."""

    l2: float
    metric: str
    scores: dict[float, float]
    rule: str = "best"


def choose_l2_on_valid(
    train_x: np.ndarray,
    train_y: np.ndarray,
    valid_logits_of: Callable[[HeadFit], np.ndarray],
    valid_y: np.ndarray,
    grid: Sequence[float] = L2_GRID,
    progress: ProgressCallback | None = None,
) -> tuple[L2Choice, HeadFit]:
    """Fit on the training features for each ``l2`` (strongest first, warm-started) and keep the
    best validation AUROC (ties: the stronger ``l2``). ``valid_logits_of(fit)`` gives the
    validation logits ``(M,)`` of a fit. Returns the choice and its fit.

    ``progress``: task ``choosing L2 on validation``, one ``fit`` per ``l2``, with the best
    ``val AUROC`` so far."""
    scores: dict[float, float] = {}
    best: tuple[float, HeadFit] | None = None
    prev: HeadFit | None = None
    with ProgressTask(progress, "choosing L2 on validation", len(grid), "fit") as task:
        for l2 in sorted(grid, reverse=True):
            fit = fit_head(train_x, train_y, l2, init=prev)
            prev = fit
            auc = auroc_of(valid_y, valid_logits_of(fit))
            scores[l2] = auc
            if best is None or auc > scores[best[1].l2] + 1e-9:
                best = (auc, fit)
            task.advance(1, **{"val AUROC": best[0]})
    assert best is not None
    return L2Choice(best[1].l2, "valid_auroc", scores), best[1]


def cross_validate_l2(
    feats_of: Callable[[np.ndarray, bool], tuple[np.ndarray, np.ndarray | None]],
    labels: np.ndarray,
    folds: np.ndarray,
    grid: Sequence[float] = L2_GRID,
    progress: ProgressCallback | None = None,
    *,
    pooled: bool = False,
    one_se: bool = False,
) -> tuple[L2Choice, np.ndarray]:
    """Choose ``l2`` by the mean per-fold AUROC (ties: the stronger ``l2``); with ``pooled``, by
    the AUROC of all the out-of-fold logits together (for :func:`slide_folds`, where a fold
    may hold one class only: a tumour-free slide).

    ``one_se`` (not with ``pooled``): the one-standard-error rule — the strongest ``l2`` whose
    mean per-fold AUROC is within one standard error (of the best ``l2``'s per-fold AUROCs) of
    the best. For folds that are optimistic about weak regularisation: regions of the same few
    slides, when the model is used on other slides (measured in docs/benchmarks.md, "Sync's
    head when slides cannot be held out").

    ``feats_of(mask, train=True|False)`` gives ``(features (M, D), labels (M,))`` for training on
    the items in ``mask`` (all their training views), or ``(logits-ready features (M, V, D),
    None)`` for scoring them (their test-time views). Returns the choice and the out-of-fold
    logits ``(N,)`` of the chosen ``l2`` (for calibration).

    ``progress``: task ``choosing L2 (k-fold CV)``, ``k * len(grid)`` fits, with the ``fold``.
    """
    y = np.asarray(labels)
    k = int(folds.max()) + 1
    oof = {l2: np.zeros(len(y)) for l2 in grid}
    with ProgressTask(progress, f"choosing L2 ({k}-fold CV)", k * len(grid), "fit") as task:
        for f in range(k):
            held = folds == f
            tx, ty = feats_of(~held, True)
            if ty is None:
                raise ValueError("feats_of(mask, True) must give the labels")
            if len(np.unique(ty)) < 2:
                raise DataError("a cross-validation fold lacks tumour or normal patches")
            vx, _ = feats_of(held, False)
            prev: HeadFit | None = None
            for l2 in sorted(grid, reverse=True):
                fit = fit_head(tx, ty, l2, init=prev)
                prev = fit
                oof[l2][held] = fit.logits(vx).mean(axis=1)
                task.advance(1, fold=f"{f + 1}/{k}")
    # the mean of the per-fold AUROCs, not the AUROC of the pooled out-of-fold logits: fold
    # models differ in scale and offset, and pooling them favours the strongest L2 (whose
    # logits all shrink towards 0) — measured at 10 tumour patches: pooled picked 100 where
    # the validation set said 1 (AUROC 0.82 against 0.85 on PCam valid). Slide folds pool
    # anyway (a tumour-free slide's fold holds one class), and on slides the strong L2 is what
    # held-out slides want (docs/benchmarks.md, "Sync's head chooses its L2 on held-out slides")
    scores = {l2: fold_score(y, oof[l2], folds, pooled=pooled) for l2 in grid}
    # max keeps the first of equal scores: iterating strongest first, ties go to the stronger l2
    best = max(sorted(grid, reverse=True), key=lambda l2: scores[l2])
    if one_se and not pooled:
        per_fold = np.array([auroc_of(y[folds == f], oof[best][folds == f]) for f in range(k)])
        per_fold = per_fold[~np.isnan(per_fold)]
        se = float(per_fold.std(ddof=1) / np.sqrt(len(per_fold))) if len(per_fold) > 1 else 0.0
        best = max(l2 for l2 in grid if scores[l2] >= scores[best] - se)
        return L2Choice(best, "cv_auroc", scores, rule="one_se"), oof[best]
    return L2Choice(best, "cv_auroc", scores), oof[best]


def perceptron_oof(
    rows_of: Callable[[np.ndarray, bool], tuple[np.ndarray, np.ndarray | None]],
    folds: np.ndarray,
    seed: int,
    progress: ProgressCallback | None,
) -> np.ndarray:
    """Out-of-fold logits ``(N,)`` of the ensemble's perceptron: each fold's is fitted on the
    other folds' training rows (``rows_of(mask, True)``) with their own standardiser and scores
    the fold's items as the mean over the views ``rows_of(mask, False)`` gives."""
    k = int(folds.max()) + 1
    out = np.zeros(len(folds))
    with ProgressTask(progress, f"checking the ensemble ({k}-fold CV)", k, "fit") as task:
        for f in range(k):
            held = folds == f
            tx, ty = rows_of(~held, True)
            assert ty is not None
            mean, std = standardiser(tx)
            vx, _ = rows_of(held, False)
            out[held] = fit_mlp(tx, ty, mean, std, seed=seed).logits(vx).mean(axis=1)
            task.advance(1, fold=f"{f + 1}/{k}")
    return out


def fold_score(
    labels: np.ndarray, scores: np.ndarray, folds: np.ndarray, *, pooled: bool = False
) -> float:
    """:func:`mean_fold_auroc`, or with ``pooled`` the AUROC of every item's out-of-fold score
    together (items labelled -1 left out)."""
    if not pooled:
        return mean_fold_auroc(labels, scores, folds)
    keep = np.asarray(labels) >= 0
    return auroc_of(np.asarray(labels)[keep], np.asarray(scores)[keep])


def mean_fold_auroc(labels: np.ndarray, scores: np.ndarray, folds: np.ndarray) -> float:
    """The mean per-fold AUROC (as :func:`cross_validate_l2` scores the L2 grid)."""
    k = int(folds.max()) + 1
    return float(np.nanmean([auroc_of(labels[folds == f], scores[folds == f]) for f in range(k)]))


class HeadNetwork(nn.Module):
    """Frozen trunk + linear head (+ with ``mlp_hidden > 0`` the ensemble's perceptron, whose
    logit is averaged with the linear head's): ``(B, 3, S, S)`` ImageNet-normalised input ->
    ``(B,)`` logits, averaged over ``views`` (dihedral test-time augmentation)."""

    def __init__(self, trunk: nn.Module, dim: int, mlp_hidden: int = 0) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = LinearHead(dim)
        self.mlp: MlpHead | None = MlpHead(dim, mlp_hidden) if mlp_hidden > 0 else None

    def set_fit(self, fit: HeadFit | EnsembleFit) -> HeadNetwork:
        """Copy a fitted head into the modules (an :class:`EnsembleFit` needs ``mlp``)."""
        if isinstance(fit, EnsembleFit):
            if self.mlp is None:
                raise ValueError("an ensemble fit needs a network built with mlp_hidden > 0")
            self.head.set_params(fit.linear)
            self.mlp.load_state_dict(fit.mlp.state)
        else:
            if self.mlp is not None:
                raise ValueError("a linear fit needs a network built without the perceptron")
            self.head.set_params(fit)
        return self

    def head_logits(self, feats: Tensor) -> Tensor:
        """``(B, D)`` pooled features -> ``(B,)`` logits of the head (or ensemble)."""
        z = self.head(feats)
        if self.mlp is not None:
            z = 0.5 * (z + self.mlp(feats))
        return z

    def train(self, mode: bool = True) -> HeadNetwork:
        return super().train(False)

    def forward(self, x: Tensor, views: Sequence[int] = (0,)) -> Tensor:
        return self.logits_and_features(x, views)[0]

    def logits_and_features(self, x: Tensor, views: Sequence[int] = (0,)) -> tuple[Tensor, Tensor]:
        """``(B,)`` logits averaged over ``views`` and the ``(B, D)`` pooled features of the
        first view (rounded to float16 as the head sees them): what the out-of-domain check
        (:mod:`qupath_rkd.model.ood`) measures, at no extra trunk pass."""
        logits, first, _mean = self.logits_with_features(x, views)
        return logits, first

    def logits_with_features(
        self, x: Tensor, views: Sequence[int] = (0,)
    ) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`logits_and_features`, and the ``(B, D)`` float32 features averaged over
        ``views`` (each view's rounded to float16 as the head sees them). For a linear head
        ``w . ((f - mean) / std) + b`` the logit of those averaged features is its logit
        averaged over the views; for the ensemble that holds for one view (the slide default)
        and approximately for more: what sync's held-out operating point scores with heads
        fitted without a slide's labels (:mod:`qupath_rkd.sync.heldout`)."""
        from qupath_rkd.features.views import view_images

        total: Tensor | None = None
        first: Tensor | None = None
        summed: Tensor | None = None
        for v in views:
            feats = self.trunk(view_images(x, v)).half().float()
            first = feats if first is None else first
            summed = feats if summed is None else summed + feats
            z = self.head_logits(feats)
            total = z if total is None else total + z
        assert total is not None and first is not None and summed is not None
        return total / len(views), first, summed / len(views)
