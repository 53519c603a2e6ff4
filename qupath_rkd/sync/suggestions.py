"""``sync``'s suggestions: where to annotate next, written with the predictions.

After predicting, :func:`update_suggestions` ranks unannotated regions across the project
(:func:`qupath_rkd.suggest.suggest_regions`) from every image's current heatmap (rebuilt from
its tile objects: this run's staged predictions, or the prediction file of an image that was up
to date), and puts them into each image's predictions as detections of class
``qupath-rkd: annotate next`` (:mod:`qupath_rkd.suggest.write`). report.json carries them under
``suggestions`` with the key of what they were computed from; when that key and the staged
predictions are unchanged, nothing is recomputed or rewritten (a sync with nothing changed
writes nothing). Features for the diversity signals come from a head model's frozen trunk, for
a few cells of the most promising regions and a seeded sample of the labelled tiles; the
per-view probabilities of ``tta_disagreement`` come from the head model too, for the same few
cells (:data:`~qupath_rkd.constants.SUGGEST_TTA_VIEWS` dihedral views each).

Frames: heatmaps, annotations and staged features are in the slide layer's frame; prediction
files are in QuPath's (minus ``bounds_offset_px``); report rows give µm in QuPath's frame.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qupath_rkd.constants import TOOL_TAG
from qupath_rkd.errors import QupathRkdError
from qupath_rkd.heatmap import Heatmap
from qupath_rkd.outputs import SLIDE_METADATA_KEYS
from qupath_rkd.suggest.config import (
    SIGNAL_COMBINED,
    SIGNAL_TUMOUR_FIRST,
    TUMOUR_FIRST_MIN_REGIONS,
    tumour_first_signal,
)
from qupath_rkd.sync.config import SyncConfig
from qupath_rkd.sync.report import STATUS_PREDICTED, STATUS_UP_TO_DATE, SyncOutcome

logger = logging.getLogger(__name__)

#: At most this many labelled tiles (evenly spread over the labelled set) stand for it.
MAX_LABELLED_TILES = 256
_FEATURE_SIGNALS = ("diversity", "uncertainty_diversity", "mixed", "mixed_random")
_VIEW_SIGNALS = ("tta_disagreement",)


def suggest_config(config: SyncConfig) -> Any:
    """The :class:`~qupath_rkd.suggest.SuggestConfig` of the ``[suggest]`` section."""
    from qupath_rkd.suggest import SuggestConfig

    s = config.section("suggest")
    return SuggestConfig(
        per_slide=int(s["per_slide"]),
        per_project=int(s["per_project"]),
        region_um=float(s["region_um"]),
        signal=str(s["signal"]),
        seed=int(s["seed"]),
    )


def update_suggestions(
    *,
    entries: Sequence[Any],
    annotation_sets: Mapping[str, Any],
    labelled: Any,
    config: SyncConfig,
    backend: Any,
    tx: Any,
    predictions: Mapping[str, Any],
    outcome: SyncOutcome,
    model: Any,
    load_model: Callable[[], Any],
    echo: Callable[[str], None] | None = None,
) -> None:
    """Compute the suggestions, stage the images whose suggestion objects change, and set
    ``outcome.suggestions`` (report.json's ``suggestions``).

    Args:
        entries, annotation_sets: the project's images and their annotations.
        labelled: the labelled set (its tiles' features are the diversity reference).
        backend: the project backend (its ``layout`` finds the prediction files).
        tx: the sync's open transaction (this run's staged predictions; restaged here).
        predictions: the new state's prediction records by entry ID.
        outcome: ``model_id``, ``operating_point`` and ``slides`` are read.
        model, load_model: the loaded model (or ``None``) and how to load it.
    """
    previous = _previous(outcome.project_dir)
    ok = {s.entry_id for s in outcome.slides if s.status in (STATUS_PREDICTED, STATUS_UP_TO_DATE)}
    usable = [e for e in entries if e.entry_id in ok]  # failed slides are left as they are
    if not config.get("suggest.enabled"):
        outcome.suggestions = None
        if previous is not None:  # remove the objects of the last suggestions
            _restage(usable, backend, tx, {}, set(), strip_only=True)
        return
    cfg = suggest_config(config)
    op = outcome.operating_point or {}
    threshold = op.get("threshold")
    key = _key(config, threshold, outcome.model_id, usable, annotation_sets, predictions, labelled)
    if not tx.entries and previous is not None and previous.get("key") == key:
        outcome.suggestions = previous
        return
    notes: list[str] = []
    configured = cfg.signal
    if cfg.signal == SIGNAL_TUMOUR_FIRST:
        n_regions = tumour_regions(labelled)
        cfg = dataclasses.replace(cfg, signal=tumour_first_signal(n_regions))
        notes.append(
            f"signal {SIGNAL_TUMOUR_FIRST}: {cfg.signal} ({n_regions} labelled tumour "
            f"region(s); {TUMOUR_FIRST_MIN_REGIONS} turn it to {SIGNAL_COMBINED})"
        )
    base = _base_features(usable, backend, tx, notes)
    slides = []
    for entry in usable:
        if entry.entry_id not in base:
            continue
        heatmap = heatmap_from_tile_features(base[entry.entry_id], _slide_mpp(entry))
        if heatmap is None:
            continue
        slides.append(_slide(entry, annotation_sets[entry.entry_id], heatmap))
    if not config.get("inference.heatmap_tiles"):
        notes.append("suggestions need the heatmap tiles: set inference.heatmap_tiles = true")
    # "uncertain" is measured from the model's calibrated threshold, where a tile's label is a
    # coin flip, not from the operating point: that is set for the false lesions a pathologist
    # meets on tumour-free tissue and may sit far from it (down to 0.05). Measured in
    # docs/benchmarks.md ("Sync's operating point below 0.5, and "uncertain" from ...").
    model = model or load_model()
    centre = float(model.threshold)
    feature_fn = labelled_features = None
    if cfg.signal in _FEATURE_SIGNALS and slides:
        feature_fn, labelled_features = _features(model, slides, usable, labelled, config, notes)
    view_fn = None
    if cfg.signal in _VIEW_SIGNALS and slides:
        view_fn = _views(model, slides, usable, config, notes)
    from qupath_rkd.suggest import suggest_regions
    from qupath_rkd.suggest.write import suggestion_features, suggestion_row

    try:
        result = suggest_regions(
            slides,
            threshold=centre,
            config=cfg,
            feature_fn=feature_fn,
            labelled_features=labelled_features,
            view_fn=view_fn,
        )
    except (QupathRkdError, OSError) as exc:  # a tile the features could not read
        if feature_fn is None and view_fn is None:
            raise
        notes.append(f"tiles unreadable ({exc}): ranked without features or views")
        result = suggest_regions(slides, threshold=centre, config=cfg)
    notes.extend(result.notes)
    by_id = {e.entry_id: e for e in usable}
    rows = []
    for s in result.suggestions:
        entry = by_id[s.entry_id]
        offset = (float(entry.bounds_offset_px[0]), float(entry.bounds_offset_px[1]))
        rows.append(suggestion_row(s, slides[s.slide_index].heatmap.mpp, offset))
    outcome.suggestions = {
        "key": key,
        "signal": cfg.signal,
        "configured_signal": configured,
        "regions": rows,
        "notes": notes,
    }
    new = suggestion_features(result.suggestions, key)
    _restage(usable, backend, tx, new, set(base), base=base)
    if echo is not None:
        for note in notes:
            echo(f"suggestions: {note}")


def tumour_regions(labelled: Any) -> int:
    """Connected regions of labelled tumour tiles (:func:`~qupath_rkd.labels.regions.tile_groups`,
    as the head's cross-validation holds them out); 0 without a labelled set."""
    from qupath_rkd.constants import LABEL_TUMOR
    from qupath_rkd.labels.regions import tile_groups

    items = [t for t in getattr(labelled, "items", None) or () if t.label == LABEL_TUMOR]
    return len(set(tile_groups(items).tolist())) if items else 0


def _previous(project_dir: Path) -> dict[str, Any] | None:
    from qupath_rkd.sync.report import report_path

    try:
        data = json.loads(report_path(project_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    found = data.get("suggestions") if isinstance(data, dict) else None
    return found if isinstance(found, dict) else None


def _key(
    config: SyncConfig,
    threshold: float | None,
    model_id: str | None,
    entries: Sequence[Any],
    annotation_sets: Mapping[str, Any],
    predictions: Mapping[str, Any],
    labelled: Any,
) -> str:
    """sha256 of everything the suggestions depend on."""
    images = []
    for entry in entries:
        record = predictions.get(entry.entry_id)
        aset = annotation_sets[entry.entry_id]
        images.append(
            {
                "entry": entry.entry_id,
                "prediction": None
                if record is None
                else [
                    record.model_id,
                    record.config_hash,
                    record.slide_fingerprint,
                    record.region_hash,
                ],
                "annotations": getattr(aset, "sha256", None),
                # the slide values the import script puts into the metadata are sync's own
                # output, not an input: they must not make the next sync recompute
                "metadata": {
                    k: v
                    for k, v in sorted((getattr(aset, "metadata", None) or {}).items())
                    if k not in SLIDE_METADATA_KEYS
                },
                "offset": [float(v) for v in entry.bounds_offset_px],
            }
        )
    payload = {
        "suggest": config.section("suggest"),
        "labels": config.section("labels"),
        "heatmap_tiles": config.get("inference.heatmap_tiles"),
        "threshold": threshold,
        "model": model_id,
        "labelled": getattr(labelled, "sha256", None),
        "images": images,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _is_suggestion(feature: Mapping[str, Any]) -> bool:
    from qupath_rkd.suggest.write import is_suggestion_feature

    return is_suggestion_feature(feature)


def _current(entry: Any, backend: Any, tx: Any) -> tuple[list[dict[str, Any]] | None, bool]:
    """An image's predictions in the slide layer's frame, and whether they are staged."""
    from qupath_rkd.qupath.geojson import _shift_features

    staged = tx.staged_features(entry.entry_id)
    if staged is not None:
        return staged, True
    layout = getattr(backend, "layout", None)
    if layout is None:
        return None, False
    path = Path(layout.predictions_file(entry.entry_id))
    try:
        features = list(json.loads(path.read_text(encoding="utf-8"))["features"])
    except (OSError, ValueError, KeyError, TypeError):
        return None, False
    offset = (float(entry.bounds_offset_px[0]), float(entry.bounds_offset_px[1]))
    if offset != (0.0, 0.0):
        features = _shift_features(features, offset)
    return features, False


def _base_features(
    entries: Sequence[Any], backend: Any, tx: Any, notes: list[str]
) -> dict[str, list[dict[str, Any]]]:
    """Every image's predictions without suggestion objects (images with none left out)."""
    out = {}
    unread = []
    for entry in entries:
        features, _staged = _current(entry, backend, tx)
        if features is None:
            unread.append(entry.name)
            continue
        out[entry.entry_id] = [f for f in features if not _is_suggestion(f)]
    if unread:
        notes.append(f"no predictions to read for {len(unread)} image(s): not suggested on")
    return out


def _restage(
    entries: Sequence[Any],
    backend: Any,
    tx: Any,
    new: Mapping[str, list[dict[str, Any]]],
    known: set[str],
    *,
    base: Mapping[str, list[dict[str, Any]]] | None = None,
    strip_only: bool = False,
) -> None:
    """Stage every image whose suggestion objects are not ``new``'s (staged ones always get
    theirs)."""
    for entry in entries:
        if not strip_only and entry.entry_id not in known:
            continue
        features, staged = _current(entry, backend, tx)
        if features is None:
            continue
        kept = [f for f in features if not _is_suggestion(f)]
        if base is not None:
            kept = base[entry.entry_id]
        wanted = kept + list(new.get(entry.entry_id, []))
        if staged or wanted != features:
            tx.stage_entry(entry.entry_id, wanted)


def heatmap_from_tile_features(features: Sequence[Mapping[str, Any]], mpp: float) -> Heatmap | None:
    """The heatmap grid rebuilt from prediction tile objects (GeoJSON dicts: each the square
    footprint of its cell, with ``Tumor probability``); ``None`` without tiles. The footprint
    is the cell's stride square, so tile side = stride here."""
    from qupath_rkd.outputs import MEASURE_PROBABILITY

    boxes = []
    for f in features:
        props = f.get("properties") or {}
        value = (props.get("measurements") or {}).get(MEASURE_PROBABILITY)
        if props.get("objectType") != "tile" or value is None:
            continue
        ring = np.asarray((f.get("geometry") or {}).get("coordinates", [[]])[0], np.float64)
        if ring.ndim != 2 or len(ring) < 4:
            continue
        boxes.append((ring[:, 0].min(), ring[:, 1].min(), ring[:, 0].max(), float(value)))
    if not boxes:
        return None
    arr = np.asarray(boxes, np.float64)
    side = float(np.median(arr[:, 2] - arr[:, 0]))
    x0, y0 = float(arr[:, 0].min()), float(arr[:, 1].min())
    cols = np.round((arr[:, 0] - x0) / side).astype(np.int64)
    rows = np.round((arr[:, 1] - y0) / side).astype(np.int64)
    grid = np.full((int(rows.max()) + 1, int(cols.max()) + 1), np.nan, np.float32)
    grid[rows, cols] = arr[:, 3].astype(np.float32)
    return Heatmap(grid, (x0, y0), side, side, float(mpp))


def _slide_mpp(entry: Any) -> float:
    if entry.mpp:
        return float(entry.mpp)
    from qupath_rkd.slides import open_slide

    with open_slide(entry.path) as slide:
        return float(slide.mpp)


def _slide(entry: Any, aset: Any, heatmap: Heatmap) -> Any:
    """The :class:`~qupath_rkd.suggest.SuggestSlide` of one image: every annotation the
    pathologist drew is excluded (objects of qupath-rkd's own classes are not hers)."""
    import shapely

    from qupath_rkd.labels.config import slide_flags
    from qupath_rkd.suggest import SuggestSlide

    geoms = [
        o.geometry
        for o in aset.objects
        if o.is_annotation and not str(o.class_name or "").startswith(TOOL_TAG)
    ]
    flags = slide_flags(getattr(aset, "metadata", None), where=f"image {entry.name!r}")
    return SuggestSlide(
        entry_id=entry.entry_id,
        image_name=entry.name,
        heatmap=heatmap,
        excluded=shapely.union_all(geoms) if geoms else None,
        tumor_free=flags.tumor_free,
        fully_annotated=flags.fully_annotated,
    )


def _features(
    model: Any,
    slides: Sequence[Any],
    entries: Sequence[Any],
    labelled: Any,
    config: SyncConfig,
    notes: list[str],
) -> tuple[Any, np.ndarray | None]:
    """``(feature_fn, labelled features (M, D))`` from a head model's frozen trunk, or
    ``(None, None)`` with a note (an RD model, or tiles that cannot be read)."""
    trunk = getattr(getattr(model, "net", None), "trunk", None)
    if trunk is None or getattr(model, "kind", "") != "head":
        notes.append("diversity needs a head model's features: ranked by uncertainty alone")
        return None, None
    import torch

    tile_px = int(config.get("labels.tile_px"))
    read_mpp = float(config.get("labels.mpp"))
    read_cells = _cell_reader(slides, entries, tile_px, read_mpp)

    def embed(images: list[np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            out = trunk(_batch(model, images)).float().cpu().numpy()
        return out.astype(np.float16).astype(np.float64)

    def feature_fn(slide_index: int, cells: np.ndarray) -> np.ndarray:
        return embed(read_cells(slide_index, cells))

    try:
        items = list(labelled.items)
        pick = np.unique(np.round(np.linspace(0, len(items) - 1, MAX_LABELLED_TILES)))
        chosen = [items[int(i)] for i in pick] if items else []
        mpps = {str(e.path): e.mpp for e in entries if e.path is not None}
        images: list[np.ndarray] = []
        by_slide: dict[str, list[Any]] = {}
        for item in chosen:
            by_slide.setdefault(str(item.slide_path), []).append(item)
        for path in sorted(by_slide):
            group = by_slide[path]
            images.extend(_read_top_left(Path(path), mpps.get(path), group, tile_px, read_mpp))
        lab = embed(images) if images else None
        return feature_fn, lab
    except (QupathRkdError, OSError) as exc:
        notes.append(f"labelled tiles unreadable for diversity ({exc}): ranked by uncertainty")
        return None, None


def _batch(model: Any, images: Sequence[np.ndarray]) -> Any:
    """``(B, 3, S, S)`` network inputs of uint8 tiles (each resized to ``model.input_px``)."""
    import torch

    from qupath_rkd.model.scorer import resize_uint8

    batch = torch.stack([resize_uint8(torch.from_numpy(a), model.input_px) for a in images])
    return model.preprocess(batch)


def _cell_reader(
    slides: Sequence[Any], entries: Sequence[Any], tile_px: int, read_mpp: float
) -> Callable[[int, np.ndarray], list[np.ndarray]]:
    """``read(slide_index, cells (n, 2) (row, col)) -> n`` uint8 ``(tile_px, tile_px, 3)``
    tiles at ``read_mpp`` centred on the cells (clamped into the slide), as predicted."""
    by_id = {e.entry_id: e for e in entries}

    def read(slide_index: int, cells: np.ndarray) -> list[np.ndarray]:
        from qupath_rkd.slides import open_slide

        s = slides[slide_index]
        entry = by_id[s.entry_id]
        cx, cy = s.heatmap.to_level0_xy(cells[:, 0], cells[:, 1])
        half = 0.5 * tile_px * read_mpp / s.heatmap.mpp
        with open_slide(entry.path, mpp=entry.mpp) as slide:
            side = tile_px * read_mpp / slide.mpp
            out = []
            for x, y in zip(cx, cy, strict=True):
                x0 = min(max(0.0, float(x) - half), max(0.0, slide.width_px - side))
                y0 = min(max(0.0, float(y) - half), max(0.0, slide.height_px - side))
                out.append(slide.read_tile(round(x0), round(y0), tile_px, read_mpp))
            return out

    return read


def _views(
    model: Any, slides: Sequence[Any], entries: Sequence[Any], config: SyncConfig, notes: list[str]
) -> Any:
    """``view_fn(slide_index, cells) -> (V, n)`` calibrated tumour probabilities of the cells'
    tiles in :data:`~qupath_rkd.constants.SUGGEST_TTA_VIEWS` dihedral views (a head model's;
    each cell scored once per sync), or ``None`` with a note (an RD model)."""
    from qupath_rkd.constants import SUGGEST_TTA_VIEWS

    net: Any = getattr(model, "net", None)
    if getattr(model, "kind", "") != "head" or not hasattr(net, "logits_with_features"):
        notes.append("tta_disagreement needs a head model's test-time views: not suggested on")
        return None
    import torch

    from qupath_rkd.features.views import view_list

    read_cells = _cell_reader(
        slides, entries, int(config.get("labels.tile_px")), float(config.get("labels.mpp"))
    )
    views = view_list(SUGGEST_TTA_VIEWS)
    cache: dict[tuple[int, int, int], np.ndarray] = {}

    def view_fn(slide_index: int, cells: np.ndarray) -> np.ndarray:
        cells = np.asarray(cells, np.int64).reshape(-1, 2)
        todo = [(int(r), int(c)) for r, c in cells if (slide_index, int(r), int(c)) not in cache]
        if todo:
            x = _batch(model, read_cells(slide_index, np.asarray(todo, np.int64)))
            with torch.inference_mode():
                logits = np.stack([net(x, [v]).float().cpu().numpy() for v in views])  # (V, n)
            probs = np.asarray(model.calibrate(logits.reshape(-1)), np.float64).reshape(
                logits.shape
            )
            for k, (r, c) in enumerate(todo):
                cache[(slide_index, r, c)] = probs[:, k]
        return np.stack([cache[(slide_index, int(r), int(c))] for r, c in cells], axis=1)

    return view_fn


def _read_top_left(
    path: Path, mpp: float | None, items: Sequence[Any], tile_px: int, read_mpp: float
) -> list[np.ndarray]:
    from qupath_rkd.slides import open_slide

    with open_slide(path, mpp=mpp) as slide:
        return [slide.read_tile(int(i.x_px), int(i.y_px), tile_px, read_mpp) for i in items]
