"""``qupath-rkd sync``: annotations in, detections out, again and again.

One call of :func:`run_sync`:

1. opens the project and its backend, takes the lock, finishes or discards what an interrupted
   sync left (:func:`qupath_rkd.sync.commit.recover`);
2. reads every image's annotations (never modifying them) and builds the labelled set
   (:mod:`qupath_rkd.labels`), whose hash says whether the labels changed;
3. trains a model when there is none, or the labels or the training configuration changed;
   otherwise reuses it;
4. predicts every image whose predictions are missing or stale (another model, another
   prediction configuration, a changed slide or region); a slide that fails is reported and
   the others go on;
5. writes everything back in one all-or-nothing commit (:mod:`qupath_rkd.sync.commit`):
   model, predictions through the backend, ``state.json``, ``report.json``.

A second run with nothing changed trains nothing, predicts nothing and writes nothing. With
``dry_run`` it only says what it would do (no lock, no file written, nothing trained).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from qupath_rkd.constants import PROJECT_SUBDIR
from qupath_rkd.errors import (
    AnnotationError,
    CheckpointError,
    DataError,
    ProjectError,
    QupathRkdError,
    SyncInterruptedError,
    UnknownResolutionError,
)
from qupath_rkd.progress import ProgressCallback, ProgressTask
from qupath_rkd.sync.commit import Transaction, ensure_writable, fault_point, recover
from qupath_rkd.sync.config import (
    MODEL_SECTIONS,
    PREDICTION_SECTIONS,
    SyncConfig,
    config_path,
)
from qupath_rkd.sync.lock import ProjectLock

if TYPE_CHECKING:
    import numpy as np
    from shapely.geometry.base import BaseGeometry
    from torch.utils.data import Dataset

    from qupath_rkd.cluster.session import ClusterSession, RemoteSlides
    from qupath_rkd.inference.predict import InferenceConfig, SlidePrediction
    from qupath_rkd.labels import LabelledSet
    from qupath_rkd.model.scorer import TrainedModel
    from qupath_rkd.qupath.backends import AnnotationSet, ExchangeLayout, ProjectBackend
    from qupath_rkd.qupath.geojson import QupathObject
    from qupath_rkd.qupath.project import ImageEntry, Project
    from qupath_rkd.slides.tiles_dataset import SlideTileDataset
    from qupath_rkd.sync.operating import NegativeSource
    from qupath_rkd.training.config import TrainConfig
    from qupath_rkd.training.trainer import TrainResult
from qupath_rkd.sync.report import (
    STATUS_FAILED,
    STATUS_PREDICTED,
    STATUS_UP_TO_DATE,
    STATUS_WOULD_PREDICT,
    SlideResult,
    SyncOutcome,
    report_json,
    report_path,
)
from qupath_rkd.sync.state import (
    ModelRecord,
    PredictionRecord,
    SyncState,
    file_sha256,
    load_state,
    model_stale_reason,
    prediction_stale_reason,
    slide_fingerprint,
    state_path,
)

logger = logging.getLogger(__name__)

MODEL_RELPATH = f"{PROJECT_SUBDIR}/model/model.pt"
_STAGED_MODEL = "model.pt"
#: Where an interrupted training's resume file (and its best checkpoint so far) is kept until
#: a later sync continues it: outside ``.pending``, which every sync discards.
RESUME_RELDIR = f"{PROJECT_SUBDIR}/resume"
_RESUME_KEY = "resume.json"


def _say(notes: list[str], message: str, echo: Callable[[str], None] | None) -> None:
    notes.append(message)
    if echo is not None:
        echo(message)


def run_sync(
    project_dir: str | Path,
    config: SyncConfig,
    *,
    dry_run: bool = False,
    slide_root: str | Path | None = None,
    update_uris: bool = False,
    progress: ProgressCallback | None = None,
    echo: Callable[[str], None] | None = None,
) -> SyncOutcome:
    """Run the loop once on a QuPath project.

    Args:
        project_dir: the project folder or its ``project.qpproj``.
        config: the configuration in effect (:func:`qupath_rkd.sync.config.load_config`).
        dry_run: say what would be done; write nothing, train nothing.
        slide_root: folder searched for slides that moved (overrides ``sync.slide_root``).
        update_uris: rewrite the stored image URIs of slides found elsewhere in
            ``project.qpproj`` (its previous version kept as a backup); never otherwise.
        progress: gets the events of the long steps (:mod:`qupath_rkd.progress`): the
            training's, ``predicting slides`` (slides) and each slide's tiles.
        echo: called with one-line remarks as they happen (the CLI prints them).

    Returns:
        The :class:`SyncOutcome` (its ``exit_code`` is 1 when a slide failed).

    Raises:
        ProjectError, AnnotationError, ConfigError, DataError, LockError: the project cannot
        be synced at all (bad input); nothing was written.
    """
    from qupath_rkd.qupath.backends import get_backend
    from qupath_rkd.qupath.project import open_project

    root = slide_root or (config.get("sync.slide_root") or None)
    project = open_project(project_dir, slide_root=root)
    outcome = SyncOutcome(project_dir=project.path, dry_run=dry_run)
    project.check_slides()  # every missing image file in one error (try --slide-root)
    if not dry_run:
        ensure_writable(project.path)
    # a scheduler is reached before anything is written (the [cluster] section)
    cluster = None if dry_run else _cluster_session(config, echo)
    lock = None if dry_run else ProjectLock(project.path, command="sync")
    try:
        if lock is not None:
            lock.acquire()
        backend, backend_note = get_backend(project, config.get("sync.backend"))
        logger.info("%s", backend_note)
        if "(" in backend_note and config.get("sync.backend") == "auto":
            _say(outcome.notes, backend_note, echo)
        writer = _entry_writer(backend, project)
        if not dry_run:
            action = recover(project.path, writer)
            if action:
                _say(outcome.notes, action, echo)
        if update_uris:
            from qupath_rkd.qupath.project import update_uris as rewrite_uris

            for change in rewrite_uris(project, dry_run=dry_run):
                verb = "would relink" if dry_run else "relinked"
                _say(outcome.notes, f"{verb} {change.name}: {change.new_uri}", echo)
        _sync_locked(project, backend, writer, config, outcome, progress, echo, cluster)
    finally:
        if lock is not None:
            lock.release()
        if cluster is not None:
            cluster.close()
    return outcome


def _cluster_session(
    config: SyncConfig, echo: Callable[[str], None] | None
) -> ClusterSession | None:
    """The ``[cluster]`` section's :class:`~qupath_rkd.cluster.session.ClusterSession`, or
    ``None`` (one process; Dask not imported). A scheduler is connected to now; a local
    cluster starts when there is something to predict."""
    from qupath_rkd.cluster import cluster_spec

    spec = cluster_spec(
        config.get("cluster.scheduler"),
        config.get("cluster.local_workers"),
        connect_timeout_s=float(config.get("cluster.connect_timeout_s")),
        where="[cluster] scheduler / local_workers",
    )
    if spec is None:
        return None
    from qupath_rkd.cluster.session import ClusterSession

    session = ClusterSession(spec, device=config.get("sync.device"), echo=echo)
    if spec.scheduler:
        session.connect()
    return session


def _entry_writer(
    backend: ProjectBackend, project: Project
) -> Callable[[str, Sequence[Mapping[str, Any]]], str | None]:
    def write(entry_id: str, features: Sequence[Mapping[str, Any]]) -> str | None:
        result = backend.write_predictions(project.entry(entry_id), features)
        path = result.path
        return file_sha256(path) if path is not None and Path(path).is_file() else None

    return write


def _region(objects: Sequence[QupathObject], config: SyncConfig) -> tuple[str, BaseGeometry | None]:
    """The union of the region annotations that restrict where to predict, and its hash
    (``"none"`` when there are none: predict everywhere)."""
    from qupath_rkd.labels.config import ClassMapping
    from qupath_rkd.labels.tiles import prediction_region

    region = prediction_region(objects, ClassMapping.from_config(config.section("classes")))
    if region is None:
        return "none", None
    return hashlib.sha256(region.wkb).hexdigest(), region


def _sync_locked(
    project: Project,
    backend: ProjectBackend,
    writer: Callable[[str, Sequence[Mapping[str, Any]]], str | None],
    config: SyncConfig,
    outcome: SyncOutcome,
    progress: ProgressCallback | None,
    echo: Callable[[str], None] | None,
    cluster: ClusterSession | None = None,
) -> None:
    state = load_state(project.path)
    entries = list(backend.images())
    if not entries:
        raise ProjectError(f"{project.qpproj_path}: the project has no images")
    overrides = config.get("images.mpp")
    entries = _with_mpp_overrides(entries, overrides, config)

    # 1. annotations (read-only) and the labelled set
    annotation_sets = _read_annotations(backend, entries)
    for aset in annotation_sets.values():
        for line in aset.repairs:
            _say(outcome.notes, f"repaired: {line}", echo)
    try:
        labelled = build_labelled_set(entries, annotation_sets, config)
    except UnknownResolutionError as exc:
        raise _mpp_hint(exc, entries, project.path) from exc
    outcome.dataset_hash = labelled.sha256
    outcome.label_summary = _label_summary(labelled)
    if echo is not None:
        echo(labelled.summary())
    label_warnings = _label_warnings(outcome.label_summary, config)
    outcome.warnings = list(label_warnings)  # and the trainer's, once the model is known
    train_warnings: list[str] = []

    # 2. the model
    model_file = project.path / MODEL_RELPATH
    model_hash = config.digest(MODEL_SECTIONS)
    training_key = _training_data_key(labelled, entries, overrides)
    current_id = _model_id(model_file, state.model) if model_file.is_file() else None
    reason = model_stale_reason(state, model_file, training_key, model_hash, model_id=current_id)
    outcome.train_reason = reason
    tx = Transaction(project.path)
    if outcome.dry_run:
        outcome.trained = False
        outcome.model_id = state.model.model_id if (reason is None and state.model) else None
    else:
        tx.begin()
    model_path = model_file
    try:
        if reason is not None and not outcome.dry_run:
            model_path = tx.staged_path(_STAGED_MODEL)
            resume_key = {"training_key": training_key, "config_hash": model_hash}
            resumed = _restore_resume(project.path, model_path, resume_key)
            if echo:
                more = ", continuing the interrupted training" if resumed else ""
                echo(f"training: {reason} ({len(labelled.items)} labelled tiles{more})")
            train_result: TrainResult | None
            try:
                train_result = _train(labelled, config, model_path, progress, resume=resumed)
            except KeyboardInterrupt:  # a second Ctrl-C, outside the trainer's own handling
                train_result = None
            if train_result is None or train_result.interrupted:
                kept = _keep_resume(project.path, model_path, resume_key)
                again = f"run `qupath-rkd sync {project.path}` again"
                raise SyncInterruptedError(
                    "training interrupted (Ctrl-C): no model, prediction or state was changed",
                    hint=f"{again} to continue the training (kept in "
                    f"{project.path / RESUME_RELDIR})"
                    if kept
                    else f"{again} to train",
                )
            fault_point("after-train")
            if current_id is not None and _content_id(model_file) == _content_id(model_path):
                # the same model as the one in use (same weights, settings, labels): keep its
                # file and ID, so nothing that depends on it changes
                model_path.unlink()
                model_path = model_file
                _say(outcome.notes, "the new model is identical to the one in use: kept", echo)
            else:
                tx.add_move(_STAGED_MODEL, MODEL_RELPATH, backup=True)
            outcome.trained = True
            train_warnings = [str(w) for w in train_result.warnings]
        new_state = SyncState(
            model=state.model,
            predictions=dict(state.predictions),
            operating_point=state.operating_point,
        )
        model: TrainedModel | None = None
        if not outcome.dry_run:
            model_id = _model_id(model_path, state.model)
            if model_id is None:
                raise CheckpointError(
                    f"{model_path} is not a readable qupath-rkd checkpoint",
                    hint=f"delete it and run `qupath-rkd sync {project.path}` again to retrain",
                )
            outcome.model_id = model_id
            if not outcome.trained:  # reused: its trainer's warnings still hold
                same = state.model is not None and state.model.model_id == model_id
                train_warnings = list(state.model.warnings) if same and state.model else []
            new_state.model = ModelRecord(
                model_id=model_id,
                dataset_hash=training_key,
                config_hash=model_hash,
                path="model/model.pt",
                warnings=train_warnings,
            )
            outcome.warnings = [*label_warnings, *(f"training: {w}" for w in train_warnings)]

        # 3. predictions (the operating point's inputs are part of what decides them)
        sources = _negative_sources(entries, annotation_sets, config)
        op_key = _operating_key(entries, sources)
        pred_hash = config.digest(PREDICTION_SECTIONS)
        if sources:
            pred_hash = hashlib.sha256(f"{pred_hash}|{op_key}".encode()).hexdigest()
        # the stored operating point holds while the model, the prediction settings and what
        # is tumour-free are unchanged
        op_full_key = hashlib.sha256(
            f"{op_key}|{outcome.model_id}|{config.digest(PREDICTION_SECTIONS)}".encode()
        ).hexdigest()
        stored_op = state.operating_point
        if stored_op is not None and stored_op.get("key") == op_full_key:
            outcome.operating_point = {k: v for k, v in stored_op.items() if k != "key"}
        to_predict: list[tuple[ImageEntry, str, str, BaseGeometry | None, str]] = []
        for entry in entries:
            result = SlideResult(entry_id=entry.entry_id, image_name=entry.name, status="")
            outcome.slides.append(result)
            if entry.path is None:
                result.status = STATUS_FAILED
                result.reason = (
                    f"slide not found: {entry.stored_path or entry.uri} (pass --slide-root DIR)"
                )
                continue
            region_hash, region = _region(annotation_sets[entry.entry_id].objects, config)
            try:
                slide_fp = slide_fingerprint(entry.path)
            except OSError as exc:
                result.status = STATUS_FAILED
                result.reason = f"cannot read {entry.path}: {exc.strerror or exc}"
                continue
            output = _prediction_file(backend, entry)
            slide_hash = _slide_prediction_hash(pred_hash, overrides.get(entry.name))
            if outcome.model_id is None and reason is not None:
                known = entry.entry_id in state.predictions
                why: str | None = "the model will change" if known else "no predictions yet"
            else:
                why = prediction_stale_reason(
                    state,
                    entry.entry_id,
                    output,
                    model_id=outcome.model_id or "",
                    config_hash=slide_hash,
                    slide_fp=slide_fp,
                    region_hash=region_hash,
                )
            if why is None:
                _fill_from_record(result, state.predictions[entry.entry_id])
                result.status = STATUS_UP_TO_DATE
                continue
            result.reason = why
            if outcome.dry_run:
                result.status = STATUS_WOULD_PREDICT
                continue
            to_predict.append((entry, slide_fp, region_hash, region, why))

        if outcome.dry_run:
            return
        negative_preds: dict[str, SlidePrediction] = {}
        threshold: float | None = None
        if to_predict:
            from qupath_rkd.model.scorer import load_model

            device = "cpu" if cluster is not None else config.get("sync.device")
            model = load_model(model_path, device=device)
            check_model_scale(config, model, model_path)
            if outcome.operating_point is None:
                op, negative_preds = _operating_point(
                    entries,
                    annotation_sets,
                    sources,
                    model,
                    config,
                    outcome,
                    echo,
                    progress,
                    cluster=cluster,
                    checkpoint=model_path,
                    labelled=labelled,
                )
                outcome.operating_point = op
                new_state.operating_point = {**op, "key": op_full_key}
                if echo is not None:
                    echo(f"threshold {op['threshold']:.4f} ({op['method']}): {op['note']}")
            threshold = float(outcome.operating_point["threshold"])
        remote: RemoteSlides | None = None
        if cluster is not None and to_predict:  # one task per slide (qupath_rkd.cluster)
            assert threshold is not None
            remote = _submit(
                cluster,
                model_path,
                [
                    (e.entry_id, e.path, _entry_config(config, e, threshold), region)
                    for e, _fp, _rh, region, _w in to_predict
                    if e.entry_id not in negative_preds and e.path is not None
                ],
            )
        from qupath_rkd.qupath.backends import ExchangeLayout

        candidates_layout = ExchangeLayout.for_project(project)
        slides_task = ProgressTask(
            progress if to_predict else None, "predicting slides", len(to_predict), "slide"
        )
        with slides_task:
            for index, (entry, slide_fp, region_hash, region, _why) in enumerate(to_predict):
                result = next(s for s in outcome.slides if s.entry_id == entry.entry_id)
                slides_task.update(index, slide=entry.name)
                try:
                    assert threshold is not None and model is not None
                    assert outcome.model_id is not None  # set before anything is predicted
                    features, summary, submission = _predict_entry(
                        entry,
                        model,
                        outcome.model_id,
                        region,
                        config,
                        threshold,
                        negative_preds.pop(entry.entry_id, None),
                        progress,
                        remote,
                    )
                except UnknownResolutionError as exc:
                    result.status = STATUS_FAILED
                    result.reason = _mpp_hint(exc, [entry], project.path).one_line()
                    logger.warning("%s failed: %s", entry.name, result.reason)
                    continue
                except QupathRkdError as exc:
                    result.status = STATUS_FAILED
                    result.reason = exc.one_line()
                    logger.warning("%s failed: %s", entry.name, exc.one_line())
                    continue
                except Exception as exc:  # a failing slide must not stop the others
                    result.status = STATUS_FAILED
                    result.reason = f"{type(exc).__name__}: {exc}".replace("\n", " ")
                    logger.warning("%s failed: %s", entry.name, result.reason)
                    logger.debug("traceback of %s", entry.name, exc_info=True)
                    continue
                tx.stage_entry(entry.entry_id, features)
                tx.stage_bytes(
                    f"candidates-{entry.entry_id}.csv",
                    submission,
                    candidates_layout.candidates_file(entry.entry_id),
                    backup=False,
                )
                new_state.predictions[entry.entry_id] = PredictionRecord(
                    model_id=outcome.model_id or "",
                    config_hash=_slide_prediction_hash(pred_hash, overrides.get(entry.name)),
                    slide_fingerprint=slide_fp,
                    region_hash=region_hash,
                    output_sha256="",
                    result=summary,
                )
                _fill_from_record(result, new_state.predictions[entry.entry_id])
                result.status = STATUS_PREDICTED
                fault_point(f"after-predict-{index}")
            slides_task.update(len(to_predict))
        attempted = {entry.entry_id for entry, *_ in to_predict}
        for result in outcome.failed:
            _mark_stale(result, state, new_state, backend, tx, attempted, outcome.model_id)
        from qupath_rkd.sync.suggestions import update_suggestions

        update_suggestions(
            entries=entries,
            annotation_sets=annotation_sets,
            labelled=labelled,
            config=config,
            backend=backend,
            tx=tx,
            predictions=new_state.predictions,
            outcome=outcome,
            model=model,
            load_model=lambda: _load(model_path, config),
            echo=echo,
        )

        # 4. write back, all or nothing
        state_json = new_state.to_json()
        values = _slide_values_outputs(backend, outcome)
        unchanged = (
            not outcome.trained
            and not tx.entries
            and not tx.moves
            and _same_json(state_path(project.path), state_json)
            and _same_json(report_path(project.path), report_json(outcome))
            and all(_same_json(path, obj) for path, obj in values.items())
        )
        if unchanged:
            tx.abort()
            return
        for path, obj in values.items():  # written at commit, each only if it changed
            tx.set_json(path, obj)
        tx.set_json(state_path(project.path), state_json)
        tx.digests_into = (f"{PROJECT_SUBDIR}/state.json", ["predictions"])
        tx.set_json(report_path(project.path), report_json(outcome))
        tx.commit(writer)
        if outcome.trained:
            _drop_resume(project.path)
    except BaseException:
        if not outcome.dry_run:
            tx.abort()
        raise


def _load(model_path: Path, config: SyncConfig) -> TrainedModel:
    from qupath_rkd.model.scorer import load_model

    return load_model(model_path, device=config.get("sync.device"))


def _read_annotations(
    backend: ProjectBackend, entries: Sequence[ImageEntry]
) -> dict[str, AnnotationSet]:
    """Every image's annotations (read only), keyed by entry ID.

    An image without an export is an error, never "no annotations": a deleted export would
    otherwise turn an outlined tumour into normal tissue. The export script writes an empty
    collection for an image with no annotations, which is the only way to have none.

    Raises:
        AnnotationError: images have no export (all of them named, with the fix), or an
            export is unusable.
    """
    sets = {e.entry_id: backend.read_annotations(e) for e in entries}
    missing = [e for e in entries if not sets[e.entry_id].exported]
    if missing:
        layout = _layout(backend)
        where = f" in {layout.annotations_dir}" if layout is not None else ""
        names = ", ".join(
            f"{e.name!r} (entry {e.entry_id}: no {e.entry_id}.geojson)" for e in missing[:5]
        )
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise AnnotationError(
            f"{len(missing)} image(s) have no annotation export{where}: {names}{more}",
            hint="in QuPath run groovy/export_annotations.groovy with Run for project "
            "(every image; an image without annotations is exported as an empty file)",
        )
    return sets


def _with_mpp_overrides(
    entries: Sequence[ImageEntry], overrides: Mapping[str, float], config: SyncConfig
) -> list[ImageEntry]:
    """``entries`` with ``images.mpp``'s level-0 µm/px (by image name) in place of QuPath's.

    Raises:
        ConfigError: an override names no image of the project (a typo must not be ignored).
    """

    from qupath_rkd.errors import ConfigError

    names = {entry.name for entry in entries}
    unknown = sorted(set(overrides) - names)
    if unknown:
        source = config.sources["images"]["mpp"]
        raise ConfigError(
            f"images.mpp (from {source}) names no image of the project: "
            + ", ".join(repr(name) for name in unknown),
            hint="use QuPath's image names: " + ", ".join(repr(n) for n in sorted(names)),
        )
    return [
        dataclasses.replace(entry, mpp=float(overrides[entry.name]))
        if entry.name in overrides
        else entry
        for entry in entries
    ]


def _mpp_hint(
    exc: UnknownResolutionError, entries: Sequence[ImageEntry], project_dir: Path
) -> UnknownResolutionError:
    """``exc`` with a hint that names what ``sync`` accepts: ``--slide-mpp`` or
    ``[images] mpp`` in the project's config.toml, for the image(s) the message is about."""
    named = [e.name for e in entries if e.path is not None and str(e.path) in exc.message]
    name = named[0] if named else (entries[0].name if len(entries) == 1 else "IMAGE NAME")
    return UnknownResolutionError(
        f"image {name!r}: {exc.message}",
        hint=f'give sync its level-0 µm/px: add [images] mpp = {{"{name}" = 0.25}} to '
        f'{config_path(project_dir)} (every sync), or pass --slide-mpp "{name}=0.25" '
        "(this run); 0.25 at 40x, 0.5 at 20x — check the scanner",
    )


def _slide_prediction_hash(pred_hash: str, mpp_override: float | None) -> str:
    """The prediction key of one image: the prediction settings' hash, combined with the
    image's µm/px override when it has one (so changing it re-predicts that image only)."""
    if mpp_override is None:
        return pred_hash
    return hashlib.sha256(f"{pred_hash}\nmpp {float(mpp_override)!r}".encode()).hexdigest()


def _content_id(path: Path) -> str | None:
    """sha256 of what defines a checkpoint: every stored value (weights by name, dtype, shape
    and bytes; config, calibration, labelled-set hash, versions) except its creation time.
    Not the file's sha256: ``torch.save`` writes a fresh serialization id into every file, so
    an identical retrain never gives identical bytes. ``None`` when the file is no readable
    checkpoint."""
    import torch

    from qupath_rkd.model.checkpoint import read_checkpoint

    try:
        payload, _ = read_checkpoint(path)
    except CheckpointError:
        return None
    tensors = dict(payload.get("state_dict") or {})
    rest = {
        k: v for k, v in payload.items() if k not in ("state_dict", "created_utc", "ood_reference")
    }
    # the out-of-domain reference (newer checkpoints only, so older IDs stay as they were):
    # its plain values with the rest, its arrays by bytes like the weights
    reference = payload.get("ood_reference")
    if isinstance(reference, dict):
        plain = {k: v for k, v in reference.items() if not isinstance(v, torch.Tensor)}
        rest["ood_reference"] = plain
        tensors.update(
            {f"ood_reference.{k}": v for k, v in reference.items() if isinstance(v, torch.Tensor)}
        )
    digest = hashlib.sha256(json.dumps(rest, sort_keys=True, default=repr).encode("utf-8"))
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"\n{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _model_id(path: Path, record: ModelRecord | None) -> str | None:
    """The ID sync gives the model in ``path`` (state.json, report.json, the feature UUIDs):
    its :func:`_content_id`, so that an identical retrain keeps the ID and rewrites no
    prediction. A model that an older qupath-rkd recorded under its file's sha256 keeps that
    ID while the file is unchanged (an upgrade re-predicts nothing)."""
    if record is not None and record.model_id == file_sha256(path):
        return record.model_id
    return _content_id(path)


#: What a stale prediction's objects are called in QuPath: ``qupath-rkd STALE lesion 1``.
#: The name still starts with the tool's prefix, so the next import replaces them.
STALE_MARK = "STALE"


def _mark_stale(
    result: SlideResult,
    state: SyncState,
    new_state: SyncState,
    backend: ProjectBackend,
    tx: Transaction,
    attempted: set[str],
    model_id: str | None,
) -> None:
    """Mark a failed slide's previous predictions stale instead of showing them as current.

    They are stale when this sync had to predict the slide again (another model, other
    settings, a changed slide or region) or were made by another model. They are kept (an
    empty file would read as "no tumour"), with the old values and ``stale: true`` in the
    report, and in QuPath every object renamed ``qupath-rkd STALE ...`` with the measurement
    ``qupath-rkd stale = 1`` (GeoJSON backend; the file is replaced at commit, its previous
    version backed up). The state keeps the old record, so the next sync tries again.
    """

    record = state.predictions.get(result.entry_id)
    if record is None or (result.entry_id not in attempted and record.model_id == model_id):
        return
    _fill_from_record(result, record)
    result.stale = True
    layout = _layout(backend)
    output = Path(layout.predictions_file(result.entry_id)) if layout is not None else None
    if output is None or not output.is_file():
        return
    try:
        old = output.read_bytes()
        data = _stale_geojson(old)
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        logger.warning("cannot mark %s stale (%s)", output, exc)
        return
    if data == old:
        return
    tx.stage_bytes(f"stale-{result.entry_id}.geojson", data, output, backup=True)
    new_state.predictions[result.entry_id] = dataclasses.replace(
        record, output_sha256=hashlib.sha256(data).hexdigest()
    )


def _stale_geojson(data: bytes) -> bytes:
    """A prediction file (GeoJSON text) with every tool object renamed ``qupath-rkd STALE
    ...`` and given the measurement ``qupath-rkd stale = 1``; same format as the backend
    writes. Already-marked objects are left as they are (so marking twice changes nothing)."""
    from qupath_rkd.qupath.geojson import TOOL_NAME_PREFIX

    collection = json.loads(data.decode("utf-8"))
    marked = f"{TOOL_NAME_PREFIX} {STALE_MARK}"
    for feature in collection["features"]:
        props = feature.setdefault("properties", {})
        name = str(props.get("name") or "")
        if name.startswith(TOOL_NAME_PREFIX) and not name.startswith(marked):
            props["name"] = marked + name[len(TOOL_NAME_PREFIX) :]
        measurements = props.get("measurements")
        if not isinstance(measurements, dict):
            measurements = {}
        measurements[f"{TOOL_NAME_PREFIX} stale"] = 1.0
        props["measurements"] = measurements
    text = json.dumps(collection, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return (text + "\n").encode("utf-8")


def _slide_values_outputs(backend: Any, outcome: SyncOutcome) -> dict[Path, dict[str, Any]]:
    """Each image's slide-level values for QuPath (:mod:`qupath_rkd.sync.slide_values`) by the
    file they go to; none for an image without predictions or a backend without an exchange
    folder (paquo)."""
    from qupath_rkd.sync.slide_values import slide_values

    layout = getattr(backend, "layout", None)
    if layout is None:
        return {}
    out: dict[Path, dict[str, Any]] = {}
    for result in outcome.slides:
        obj = slide_values(result)
        if obj is not None:
            out[Path(layout.slide_values_file(result.entry_id))] = obj
    return out


def _same_json(path: Path, obj: Any) -> bool:
    try:
        return bool(json.loads(path.read_text(encoding="utf-8")) == obj)
    except (OSError, ValueError):
        return False


def _layout(backend: ProjectBackend) -> ExchangeLayout | None:
    """The exchange folder of a GeoJSON backend (``None`` for paquo: QuPath's own files)."""
    from qupath_rkd.qupath.backends import GeojsonBackend

    return backend.layout if isinstance(backend, GeojsonBackend) else None


def _prediction_file(backend: ProjectBackend, entry: ImageEntry) -> Path | None:
    layout = _layout(backend)
    if layout is not None:
        return Path(layout.predictions_file(entry.entry_id))
    return None


def _fill_from_record(result: SlideResult, record: PredictionRecord) -> None:
    summary = record.result or {}
    result.tumor_score = summary.get("tumor_score")
    result.lesions = summary.get("lesions")
    result.lesion_area_mm2 = summary.get("lesion_area_mm2")
    result.note = str(summary.get("note") or "")
    result.largest_lesion_major_axis_um = summary.get("largest_lesion_major_axis_um")
    result.burden_category = summary.get("burden_category")
    result.positive = summary.get("positive")
    result.ood_far_fraction = summary.get("ood_far_fraction")
    result.out_of_domain = summary.get("out_of_domain")
    result.ood_note = str(summary.get("ood_note") or "")


def _negative_sources(
    entries: Sequence[ImageEntry], annotation_sets: Mapping[str, AnnotationSet], config: SyncConfig
) -> dict[str, NegativeSource]:
    """Images with tumour-free knowledge (none when ``inference.threshold`` is a number)."""
    if config.get("inference.threshold") != "auto":
        return {}
    from qupath_rkd.sync.operating import negative_sources

    return negative_sources(entries, annotation_sets, config.section("classes"))


def _operating_key(entries: Sequence[ImageEntry], sources: Mapping[str, NegativeSource]) -> str:
    from qupath_rkd.sync.operating import operating_key

    fingerprints: dict[str, str] = {}
    for entry in entries:
        if entry.entry_id in sources and entry.path is not None:
            try:
                fingerprints[entry.entry_id] = slide_fingerprint(entry.path)
            except OSError:
                fingerprints[entry.entry_id] = "unreadable"
    return operating_key(sources, fingerprints)


def _operating_point(
    entries: Sequence[ImageEntry],
    annotation_sets: Mapping[str, AnnotationSet],
    sources: Mapping[str, NegativeSource],
    model: TrainedModel,
    config: SyncConfig,
    outcome: SyncOutcome,
    echo: Callable[[str], None] | None,
    progress: ProgressCallback | None = None,
    *,
    cluster: ClusterSession | None = None,
    checkpoint: Path | None = None,
    labelled: LabelledSet | None = None,
) -> tuple[dict[str, Any], dict[str, SlidePrediction]]:
    """The operating point (as a dict) and the predictions made to find it (entry ID →
    :class:`~qupath_rkd.inference.predict.SlidePrediction` at the model's threshold).

    ``inference.threshold`` set: that (method ``given``). Otherwise the tumour-free images and
    normal regions are predicted and the threshold chosen on them; with none of them, the
    model's calibrated threshold (method ``fallback``). A tumour-free image that cannot be
    predicted is left out (noted); the slide itself fails later with its own error.

    Out-of-sample (:mod:`qupath_rkd.sync.heldout`): an image whose tiles are in ``labelled``
    (the training set) is scored by a head fitted without them, from the features its
    prediction returns (on the cluster too: the workers send them back, the client scores);
    where that cannot be done it stays in-sample. ``held_out`` and the note say which.
    """

    from qupath_rkd.constants import DEFAULT_CANDIDATE_FLOOR
    from qupath_rkd.inference import predict_slide
    from qupath_rkd.lesions.operating_point import (
        METHOD_FALLBACK,
        MIN_SLIDES_BELOW_CALIBRATED,
        choose_operating_point,
        fallback,
        given,
        slide_equivalents,
    )
    from qupath_rkd.sync.heldout import (
        BandFolds,
        HeldOutHeads,
        held_out_heads,
        held_out_heatmap,
        held_out_summary,
        without_features,
    )
    from qupath_rkd.sync.operating import negative_heatmap, representative

    target = float(config.get("inference.target_fp_per_slide"))
    if config.get("inference.threshold") != "auto":
        return given(float(config.get("inference.threshold"))).as_dict(), {}
    calibrated = float(model.threshold)
    preds: dict[str, SlidePrediction] = {}
    negatives = []
    wanted = [e for e in entries if sources.get(e.entry_id) is not None and e.path is not None]
    heads = HeldOutHeads()
    if labelled is not None and wanted:
        heads = held_out_heads(
            labelled,
            [str(e.path) for e in wanted],
            model,
            _train_config(config, len(labelled.items)),
            progress=progress,
        )

    def entry_config(entry: ImageEntry) -> InferenceConfig:
        cfg = inference_config(config, entry.mpp)
        if str(entry.path) in heads.fits:
            cfg = dataclasses.replace(cfg, return_features=True)
        return cfg

    remote: RemoteSlides | None = None
    if cluster is not None and checkpoint is not None:
        jobs = []
        for entry in wanted:
            assert entry.path is not None
            _hash, region = _region(annotation_sets[entry.entry_id].objects, config)
            jobs.append((entry.entry_id, entry.path, entry_config(entry), region))
        remote = _submit(cluster, checkpoint, jobs)
    held: list[str] = []
    banded: list[str] = []
    in_sample: dict[str, str] = {}
    not_trained: list[str] = []
    for entry in wanted:
        src = sources[entry.entry_id]
        assert entry.path is not None
        _hash, region = _region(annotation_sets[entry.entry_id].objects, config)
        try:
            pred = (
                remote.result(entry.entry_id)
                if remote is not None
                else predict_slide(
                    entry.path,
                    model,
                    region=region,
                    config=entry_config(entry),
                    progress=progress,
                )
            )
        except QupathRkdError as exc:
            _say(outcome.notes, f"operating point: {entry.name} left out: {exc.one_line()}", echo)
            continue
        heatmap = pred.heatmap
        fit = heads.fits.get(str(entry.path))
        if fit is not None:
            heatmap = held_out_heatmap(pred, fit, model)
            (banded if isinstance(fit, BandFolds) else held).append(entry.name)
        elif str(entry.path) in heads.in_sample:
            in_sample[entry.name] = heads.in_sample[str(entry.path)]
        elif labelled is not None:
            not_trained.append(entry.name)
        preds[entry.entry_id] = without_features(pred)
        negatives.append((src, negative_heatmap(src, heatmap, entry.name)))
    if not negatives:
        return fallback(target, calibrated).as_dict(), preds
    # normal outlines are where the model needed teaching: with a tumour-free or fully
    # annotated slide known, the rate is measured on those (sync.operating's module doc)
    counted, regions_left = representative(negatives)
    # Below the calibrated threshold down to the candidate floor, as predict does: a head
    # calibrated out-of-fold on few or hard annotated regions has a flat calibration, and its
    # tumour may never reach 0.5 (the active-learning benchmark's projects reported no lesion
    # at all on slides with annotated tumour). Only with a slide's worth of tumour-free tissue.
    enough = slide_equivalents(counted) >= MIN_SLIDES_BELOW_CALIBRATED
    floor = DEFAULT_CANDIDATE_FLOOR if enough else calibrated
    # the extent capped at the calibrated threshold, as predict_slide's resolved config does
    post = dataclasses.replace(
        inference_config(config, None).post_processing(), extent_cap=calibrated
    )
    op = choose_operating_point(counted, post, target_fp_per_slide=target, floor=floor)
    if regions_left:
        op = dataclasses.replace(
            op,
            note=f"{op.note}; the normal outlines on {', '.join(regions_left)} train the model "
            "but are not counted (outlined where the model needed teaching, not a sample of "
            "normal tissue)",
        )
    if not enough and op.method != METHOD_FALLBACK:
        op = dataclasses.replace(
            op,
            note=f"{op.note} (less than {MIN_SLIDES_BELOW_CALIBRATED:g} slide of tumour-free "
            f"tissue known: not below the calibrated {calibrated:g}; mark a tumour-free slide "
            "to go lower)",
        )
    if labelled is not None and op.method != METHOD_FALLBACK:
        how, note = held_out_summary(held, in_sample, not_trained, banded)
        op = dataclasses.replace(op, held_out=how, note=f"{op.note}; {note}")
    return op.as_dict(), preds


# --- the seams to the other stages ----------------------------------------------------------
def build_labelled_set(
    entries: Sequence[ImageEntry], annotation_sets: Mapping[str, AnnotationSet], config: SyncConfig
) -> LabelledSet:
    """The project's labelled set (:func:`qupath_rkd.labels.build_labelled_set`).

    Raises:
        DataError: no tumour and no normal tiles, or only tumour tiles.
        AnnotationError, ConfigError, SlideError: unusable annotations, flags or slides.
    """
    from qupath_rkd.labels import ClassMapping, LabelConfig, SlideInput
    from qupath_rkd.labels import build_labelled_set as build

    labels = config.section("labels")
    labels["stride_px"] = None if labels["stride_px"] == "auto" else labels["stride_px"]
    inputs = [SlideInput.from_entry(e, annotation_sets[e.entry_id]) for e in entries]
    return build(
        inputs,
        ClassMapping.from_config(config.section("classes")),
        LabelConfig.from_config(labels),
        require_trainable=True,
    )


def _training_data_key(
    labelled: LabelledSet,
    entries: Sequence[ImageEntry] = (),
    overrides: Mapping[str, float] | None = None,
) -> str:
    """The labelled set's hash combined with the fingerprints of the slide files its tiles
    come from (a re-scanned or replaced training slide retrains too) and the µm/px
    overrides (``images.mpp``) of those slides (none: the key is as without overrides)."""
    digest = hashlib.sha256(labelled.sha256.encode())
    paths = sorted({str(item.slide_path) for item in labelled.items})
    for path in paths:
        digest.update(f"\n{slide_fingerprint(path)}".encode())
    used = set(paths)
    for entry in entries:
        mpp = (overrides or {}).get(entry.name)
        if mpp is not None and entry.path is not None and str(entry.path) in used:
            digest.update(f"\nmpp {entry.entry_id} {float(mpp)!r}".encode())
    return digest.hexdigest()


def _label_summary(labelled: LabelledSet) -> dict[str, dict[str, int]]:
    """``{image: {"tumor": used, "normal": used}}`` for the report."""
    return {
        str(row["image"]): {"tumor": int(row["used_tumor"]), "normal": int(row["used_normal"])}
        for row in labelled.summary_rows()
    }


def _label_warnings(summary: Mapping[str, Mapping[str, int]], config: SyncConfig) -> list[str]:
    """Warnings about the labelled set, in a pathologist's words: no tumour tiles at all
    means a model of normal tissue only (the one-class texture kNN), measured far weaker at
    finding lymph-node metastases than with a few tumour annotations."""
    if sum(int(counts.get("tumor", 0)) for counts in summary.values()):
        return []
    classes = " or ".join(repr(name) for name in config.get("classes.tumor"))
    return [
        "no tumour tiles: the model learns normal tissue only (a one-class texture model: "
        "patch AUROC about 0.82 on PCam, against 0.92 from 100 tumour patches); outline "
        "metastases with the class "
        f"{classes} on at least one slide (in QuPath), export and sync again"
    ]


def _train_config(config: SyncConfig, n_train: int) -> TrainConfig:
    from qupath_rkd.training.config import TrainConfig

    t = config.section("training")
    batch = int(t["batch_size"])
    steps = int(t["steps"])
    full_epoch = max(1, math.ceil(n_train / batch))
    epochs = max(1, math.ceil(steps / full_epoch))
    per_epoch = max(1, math.ceil(steps / epochs))
    return TrainConfig(
        scorer=t["scorer"],
        head=t["head"],
        teacher=t["teacher"],
        teacher_weights=t["teacher_weights"] or None,
        input_px=None if t["input_px"] == "auto" else int(t["input_px"]),
        mpp=float(config.get("labels.mpp")),
        tile_px=int(config.get("labels.tile_px")),
        epochs=epochs,
        max_steps_per_epoch=per_epoch,
        validate_every_steps=max(1, math.ceil(steps / 4)),  # about four validations
        batch_size=batch,
        lr=float(t["lr"]),
        alpha=float(t["alpha"]),
        gamma=float(t["gamma"]),
        balance_batches=bool(t["balance_batches"]),
        seed=int(t["seed"]),
        device=config.get("sync.device"),
        num_workers=int(config.get("sync.num_workers")),
    )


def _resume_files(model_path: Path) -> list[Path]:
    """The trainer's files of a run writing ``model_path``: the resume file, the best
    checkpoint so far (the resume file refers to it)."""
    return [model_path.with_name(model_path.name + ".resume"), model_path]


def _keep_resume(project_dir: Path, model_path: Path, key: Mapping[str, str]) -> bool:
    """Move an interrupted training's files out of ``.pending`` into ``RESUME_RELDIR``, with
    ``key`` (what was being trained), so that the next sync can continue it. Returns whether
    there was a resume file to keep."""
    from qupath_rkd.io_utils import atomic_write_json

    resume, checkpoint = _resume_files(model_path)
    if not resume.is_file():
        return False
    folder = project_dir / RESUME_RELDIR
    _drop_resume(project_dir)
    folder.mkdir(parents=True)
    for path in (resume, checkpoint):
        if path.is_file():
            path.replace(folder / path.name)
    atomic_write_json(folder / _RESUME_KEY, dict(key))
    return True


def _restore_resume(project_dir: Path, model_path: Path, key: Mapping[str, str]) -> bool:
    """Put a kept resume file back next to ``model_path`` when it is for the same training
    (``key``); a resume file for other labels or settings is discarded. Returns whether the
    training can continue from it."""
    import shutil

    folder = project_dir / RESUME_RELDIR
    if not folder.is_dir():
        return False
    try:
        same = json.loads((folder / _RESUME_KEY).read_text(encoding="utf-8")) == dict(key)
    except (OSError, ValueError):
        same = False
    names = [path.name for path in _resume_files(model_path)]
    if not same or not (folder / names[0]).is_file():
        _drop_resume(project_dir)
        return False
    for name in names:
        if (folder / name).is_file():
            shutil.copyfile(folder / name, model_path.with_name(name))
    return True


def _drop_resume(project_dir: Path) -> None:
    """Remove a kept resume file (its training finished, or cannot be continued)."""
    import shutil

    shutil.rmtree(project_dir / RESUME_RELDIR, ignore_errors=True)


def _as_dataset(tiles: SlideTileDataset) -> Dataset[tuple[np.ndarray, int]]:
    """``tiles`` as the trainer's torch ``Dataset``: a map-style dataset by protocol
    (``__len__``, ``__getitem__``, ``labels``), not a subclass, so that slides/ imports no
    torch."""
    return cast("Dataset[tuple[np.ndarray, int]]", tiles)


def _train(
    labelled: LabelledSet,
    config: SyncConfig,
    out: Path,
    progress: ProgressCallback | None,
    *,
    resume: bool = False,
) -> TrainResult:
    """Train on the labelled set; the checkpoint is written to ``out``.

    With ``resume``, continue from ``<out>.resume`` (an interrupted sync's training); a resume
    file the trainer refuses is dropped and the training starts over.

    Returns:
        The trainer's :class:`~qupath_rkd.training.trainer.TrainResult` (check
        ``interrupted``: a Ctrl-C gives a partial model that must not be used).
    """
    from qupath_rkd.slides.tiles_dataset import SlideTileDataset, split_by_label
    from qupath_rkd.training.trainer import train

    dataset = SlideTileDataset(
        labelled.items,
        tile_px=int(labelled.tile_px),
        tile_mpp=float(labelled.tile_mpp),
        slide_mpp=labelled.slide_mpp,
    )
    started = time.perf_counter()
    if config.get("training.scorer") == "head":
        # every labelled tile trains; the L2 strength and the calibration come from a
        # cross-validation that holds out whole slides once two or more hold tumour (the
        # model is for other slides; measured: held-out tile AUROC 0.905 against 0.890 by
        # regions, docs/benchmarks.md), else whole annotated regions (never a neighbouring
        # tile of a region the fold trains on)
        import numpy as np

        from qupath_rkd.labels.regions import tile_groups

        result = train(
            _as_dataset(dataset),
            None,
            _train_config(config, len(dataset)),
            out,
            dataset_hash=labelled.sha256,
            progress=progress,
            groups=tile_groups(labelled.items),
            slides=np.array([item.slide_path for item in labelled.items]),
        )
        logger.info("trained in %.1f s: %s", time.perf_counter() - started, result)
        if not result.interrupted and not out.is_file():
            raise DataError(f"training wrote no checkpoint at {out}")
        return result
    train_idx, valid_idx = split_by_label(
        dataset.labels,
        float(config.get("training.valid_fraction")),
        int(config.get("training.seed")),
    )
    train_set = dataset.subset(train_idx)
    # valid_fraction 0 (or too few tiles to hold any out): no validation set, and the
    # trainer keeps the last epoch and calibrates on training tiles (with a warning); an
    # empty SlideTileDataset would refuse to be built
    valid_set = dataset.subset(valid_idx) if len(valid_idx) else None
    train_config = _train_config(config, len(train_set))

    def run(resume_from: bool) -> TrainResult:
        return train(
            _as_dataset(train_set),
            None if valid_set is None else _as_dataset(valid_set),
            train_config,
            out,
            dataset_hash=labelled.sha256,
            progress=progress,
            resume=resume_from,
        )

    try:
        result = run(resume)
    except CheckpointError as exc:
        if not resume:
            raise
        logger.warning("cannot continue the interrupted training (%s): starting over", exc)
        for path in _resume_files(out):
            path.unlink(missing_ok=True)
        result = run(False)
    logger.info("trained in %.1f s: %s", time.perf_counter() - started, result)
    if result.interrupted:
        return result
    checkpoint = Path(result.checkpoint)
    if checkpoint != out and checkpoint.is_file():
        checkpoint.replace(out)
    if not out.is_file():
        raise DataError(f"training wrote no checkpoint at {out}")
    return result


def check_model_scale(config: SyncConfig, model: TrainedModel, model_path: Path) -> None:
    """Refuse a model whose training tiles (recorded in its checkpoint) are not the tiles
    ``labels.tile_px`` at ``labels.mpp`` describe: inference reads the checkpoint's, so a
    disagreement means the model was trained for other settings (one-line :class:`ConfigError`).
    """
    from qupath_rkd.errors import ConfigError

    mpp, tile_px = float(config.get("labels.mpp")), int(config.get("labels.tile_px"))
    if model.mpp is None or abs(float(model.mpp) - mpp) > 1e-6 * mpp or model.tile_px != tile_px:
        raise ConfigError(
            f"{model_path} was trained on {model.tile_px} px tiles at {model.mpp} µm/px, but "
            f"labels.tile_px/labels.mpp say {tile_px} px at {mpp} µm/px",
            hint="delete that model file so sync trains a new one, or set labels.tile_px and "
            "labels.mpp back",
        )


def inference_config(config: SyncConfig, slide_mpp: float | None) -> InferenceConfig:
    """The :class:`~qupath_rkd.inference.InferenceConfig` of sync's settings. Tile size and
    µm/px are left to the model (``None``: what its checkpoint records, the training tiles;
    :func:`check_model_scale` holds them equal to ``labels.tile_px`` at ``labels.mpp``)."""
    from qupath_rkd.inference.predict import InferenceConfig

    inf = config.section("inference")
    if int(inf["tta_views"]) not in (1, 2, 4, 8):
        from qupath_rkd.errors import ConfigError

        raise ConfigError(
            f"inference.tta_views must be 1, 2, 4 or 8, not {inf['tta_views']}",
            hint="fix it in qupath-rkd/config.toml or --set inference.tta_views=1",
        )
    return InferenceConfig(
        tile_mpp=None,
        tile_px=None,
        stride_px=None if inf["stride_px"] == "auto" else int(inf["stride_px"]),
        min_tissue_fraction=float(config.get("labels.min_tissue_fraction")),
        threshold=None if inf["threshold"] == "auto" else float(inf["threshold"]),
        min_major_axis_um=float(inf["min_lesion_um"]),
        smooth_sigma_um=float(inf["smooth_um"]),
        extent_ratio=float(inf["extent_ratio"]),
        slide_score=str(inf["slide_score"]),
        slide_mpp=slide_mpp,
        tta_views=int(inf["tta_views"]),
        batch_size=int(inf["batch_size"]),
        num_workers=int(config.get("sync.num_workers")),
        torch_threads=int(config.get("sync.torch_threads")) or None,
    )


def _entry_config(config: SyncConfig, entry: ImageEntry, threshold: float) -> InferenceConfig:
    """The inference configuration an image is predicted with, at the seed ``threshold``."""

    return dataclasses.replace(inference_config(config, entry.mpp), threshold=threshold)


def _submit(
    cluster: ClusterSession,
    checkpoint: Path,
    jobs: Sequence[tuple[str, Path, InferenceConfig, BaseGeometry | None]],
) -> RemoteSlides:
    """``(entry ID, slide path, inference config, region)`` jobs to the cluster (keys: the
    entry IDs); see :mod:`qupath_rkd.cluster`."""
    from qupath_rkd.cluster.session import SlideJob

    return cluster.submit(checkpoint, [SlideJob(k, Path(p), c, r) for k, p, c, r in jobs])


def _predict_entry(
    entry: ImageEntry,
    model: TrainedModel,
    model_id: str,
    region: BaseGeometry | None,
    config: SyncConfig,
    threshold: float,
    earlier: SlidePrediction | None = None,
    progress: ProgressCallback | None = None,
    remote: RemoteSlides | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any], bytes]:
    """Predict one image: (GeoJSON features for the backend, summary for the report, the
    Camelyon16 candidate list as CSV bytes).

    The features are those ``qupath-rkd predict`` writes (:mod:`qupath_rkd.inference.write`):
    lesions as ``Tumor`` detections, and with ``inference.heatmap_tiles`` every scored tile as
    a QuPath tile carrying its probability; their UUIDs derive from the inference key (sync's
    ``model_id``, see :func:`_model_id`, + settings) and the entry, so the same prediction
    gives the same bytes. The candidate list is ``predict``'s ``camelyon16/<slide>.csv``
    (lesion peaks and the heatmap's maxima below the threshold), so that ``evaluate`` scores
    both commands' output the same way.
    """
    from qupath_rkd.inference import predict_slide
    from qupath_rkd.inference.predict import apply_threshold
    from qupath_rkd.inference.write import (
        candidates_csv,
        lesion_features,
        slide_candidates,
        tile_features,
    )

    if earlier is not None:  # predicted to find the operating point: only re-threshold it
        prediction = apply_threshold(earlier, threshold)
    elif remote is not None:  # sent to the cluster (qupath_rkd.cluster)
        prediction = remote.result(entry.entry_id)
    else:
        cfg = _entry_config(config, entry, threshold)
        prediction = predict_slide(entry.path, model, region=region, config=cfg, progress=progress)
    key = prediction.config.key(model_id)
    slide_id = f"entry-{entry.entry_id}"
    features = lesion_features(prediction, key, slide_id)
    if config.get("inference.heatmap_tiles"):
        features.extend(tile_features(prediction, key, slide_id))
    area_mm2 = sum(float(lesion.area_um2) for lesion in prediction.lesions) / 1e6
    summary: dict[str, float | int | str | bool | None] = {
        # None (empty in the table, no number in QuPath) when no tissue was scored: 0 would
        # read as "benign"; the note says why
        "tumor_score": (
            None if prediction.slide_score is None else round(float(prediction.slide_score), 6)
        ),
        "lesions": len(prediction.lesions),
        "lesion_area_mm2": round(area_mm2, 6),
        "positive": bool(prediction.positive),
    }
    if prediction.burden is not None:
        summary["largest_lesion_major_axis_um"] = round(prediction.burden.largest_major_axis_um, 1)
        summary["burden_category"] = prediction.burden.category
    if prediction.note:
        summary["note"] = prediction.note
    ood = prediction.ood
    if ood is not None and ood.available:
        summary["ood_far_fraction"] = ood.as_dict()["ood_far_fraction"]
        summary["out_of_domain"] = bool(ood.flagged)
    elif ood is not None:
        summary["ood_note"] = ood.note
    return features, summary, candidates_csv(slide_candidates(prediction)).encode("utf-8")
