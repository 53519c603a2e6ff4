"""Nothing silently wrong (issue 9): an interrupted training, a missing export, bad coordinates,
colours, nesting or entry IDs never become a committed model or relabelled tumour; each is one
line, a non-zero exit, and the project compared by sha256 before and after."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from sync_helpers import FAST, copy_demo, snapshot
from sync_helpers import one_error_line as _one_error_line

from qupath_rkd.cli import cli

RESUME = "project/qupath-rkd/resume"
#: a training setting that differs from the synced demo's: the next sync retrains
# the interrupted training is RD's (its steps are where Ctrl-C lands and resumes exactly); the
# head's own Ctrl-C is tested below
RETRAIN = {"training.seed": 7, "training.scorer": "rd"}


def _sync(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["sync", *args])
    return result.exit_code, result.output


def _fast(**extra: object) -> list[str]:
    values = {**FAST, **extra}
    return [arg for k, v in values.items() for arg in ("--set", f"{k}={v}")]


def _ctrl_c_at(monkeypatch: pytest.MonkeyPatch, step: int, times: int = 1) -> None:
    """Send this process SIGINT (what Ctrl-C does) ``times`` times right after training step
    ``step``: the trainer's own SIGINT handler is in place, as in a real run."""
    from qupath_rkd.training import trainer

    original = trainer._Run._step

    def step_then_ctrl_c(self, batch, aug_gen, *args, **kwargs):  # type: ignore[no-untyped-def]
        original(self, batch, aug_gen, *args, **kwargs)
        if self.global_step == step:
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(trainer._Run, "_step", step_then_ctrl_c)


def _model_weights(project: Path) -> dict[str, object]:
    checkpoint = torch.load(
        project / "qupath-rkd" / "model" / "model.pt", map_location="cpu", weights_only=False
    )
    state = checkpoint["state_dict"]
    return {k: v for k, v in state.items() if hasattr(v, "shape")}


@pytest.fixture(scope="module")
def retrained_weights(synced: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The weights of an uninterrupted retrain (``RETRAIN``) of the synced demo."""
    project = copy_demo(synced.parent, tmp_path_factory.mktemp("retrained") / "demo")
    code, out = _sync(str(project), *_fast(**RETRAIN))
    assert code == 0 and "trained a model" in out, out
    return _model_weights(project)


@pytest.mark.parametrize(("step", "times"), [(1, 1), (3, 1), (2, 2)])
def test_ctrl_c_during_training_changes_nothing_and_resumes(
    synced_copy: Path,
    retrained_weights: dict[str, object],
    monkeypatch: pytest.MonkeyPatch,
    step: int,
    times: int,
) -> None:
    """Ctrl-C (once, or twice: stop at once) during a retrain: one line, exit 130, the previous
    model, predictions, state and report byte-identical, the resume file kept; the next sync
    continues the training and commits the finished model (after one Ctrl-C, with the weights
    of an uninterrupted retrain; a second one abandons a step part-way, so only continues)."""
    root = synced_copy.parent
    before = snapshot(root)
    before_state = (synced_copy / "qupath-rkd" / "state.json").read_text()
    args = [str(synced_copy), *_fast(**RETRAIN)]
    with monkeypatch.context() as patch:
        _ctrl_c_at(patch, step, times)
        code, out = _sync(*args)
    assert code == 130, out
    line = _one_error_line(out)
    assert "training interrupted" in line and "again to continue the training" in line
    assert snapshot(root, skip=(RESUME,)) == before
    assert (root / RESUME / "model.pt.resume").is_file()

    code, out = _sync(*args)
    assert code == 0, out
    assert "continuing the interrupted training" in out
    assert "trained a model" in out and "4 slide(s) predicted" in out
    assert not (root / RESUME).exists()
    state = json.loads((synced_copy / "qupath-rkd" / "state.json").read_text())
    assert state["model"]["model_id"] != json.loads(before_state)["model"]["model_id"]
    got = _model_weights(synced_copy)
    assert got.keys() == retrained_weights.keys()
    if times == 1:  # stopped between two steps: the continued training is exact
        assert all(torch.equal(got[k], retrained_weights[k]) for k in got)  # type: ignore[arg-type]


def test_ctrl_c_escaping_the_trainer_changes_nothing(
    synced_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A KeyboardInterrupt out of the trainer itself (e.g. while it builds the network) also
    stops the sync before any prediction, with nothing written."""
    from qupath_rkd.training import trainer

    def interrupted(*args: object, **kwargs: object) -> object:
        raise KeyboardInterrupt

    root = synced_copy.parent
    before = snapshot(root)
    monkeypatch.setattr(trainer, "train", interrupted)
    code, out = _sync(str(synced_copy), *_fast(**RETRAIN))
    assert code == 130, out
    assert "training interrupted" in _one_error_line(out)
    assert snapshot(root) == before


def test_ctrl_c_while_the_head_reads_features_changes_nothing(
    synced_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default head interrupted during its feature extraction: exit 130, one line, no
    model, prediction or state written (nothing to resume: the features already computed are
    in the feature cache, so the next sync is quick)."""
    from qupath_rkd.features import extract

    original = extract.trunk_features
    calls = {"n": 0}

    def ctrl_c_on_the_second_batch(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)  # type: ignore[arg-type]

    root = synced_copy.parent
    before = snapshot(root)
    monkeypatch.setattr(extract, "trunk_features", ctrl_c_on_the_second_batch)
    code, out = _sync(str(synced_copy), *_fast(**{"training.seed": 7}))
    assert code == 130, out
    assert calls["n"] == 2
    line = _one_error_line(out)
    assert "training interrupted" in line and "again to train" in line
    assert snapshot(root) == before


def _break_export(project: Path, how: str) -> str:
    """Make entry 1's annotation export (the outlined tumour slide) unusable in one of the
    ways a careful user found; returns what the one error line must name."""
    folder = project / "qupath-rkd" / "annotations"
    export = folder / "1.geojson"
    if how == "no-folder":
        for path in sorted(folder.iterdir()):
            path.unlink()
        folder.rmdir()
        return "no annotation export"
    export.unlink()
    if how == "deleted":
        return "no annotation export"
    if how == "folder":
        export.mkdir()
        return "is a folder"
    if how == "dangling-link":
        export.symlink_to(folder / "gone.geojson")
        return "does not exist"
    assert how == "dev-zero"
    export.symlink_to("/dev/zero")
    return "not a regular file"


@pytest.mark.parametrize("how", ["deleted", "folder", "dangling-link", "dev-zero", "no-folder"])
def test_missing_export_is_an_error_never_zero_annotations(synced_copy: Path, how: str) -> None:
    """A missing or unreadable export never turns the outlined tumour into normal tissue: one
    line naming the image's export and the fix, exit 1, nothing written (no retraining)."""
    needle = _break_export(synced_copy, how)
    root = synced_copy.parent
    before = snapshot(root)
    code, out = _sync(str(synced_copy), *_fast())
    assert code == 1, out
    line = _one_error_line(out)
    assert needle in line and "export_annotations.groovy" in line
    assert "1.geojson" in line
    assert snapshot(root) == before


@pytest.mark.parametrize("entry_id", ["../../evil", "a/b", "3", 3.0, -3, True, [3], {"id": 3}])
def test_entry_id_not_written_by_qupath_is_one_error(synced_copy: Path, entry_id: object) -> None:
    """Only the whole-number entry IDs QuPath writes are accepted where the project is read:
    a path, a string, a float, a list... is one line naming project.qpproj and the image,
    exit 1, nothing written anywhere (in the project folder or next to it)."""
    qpproj = synced_copy / "project.qpproj"
    data = json.loads(qpproj.read_text())
    data["images"][2]["entryID"] = entry_id
    qpproj.write_text(json.dumps(data, indent=2))
    root = synced_copy.parent
    before = snapshot(root.parent)
    code, out = _sync(str(synced_copy), *_fast())
    assert code == 1, out
    line = _one_error_line(out)
    assert str(qpproj) in line and ("entryID" in line or "entry ID" in line)
    assert snapshot(root.parent) == before


_BOX = [[[100, 100], [400, 100], [400, 400], [100, 400], [100, 100]]]


def _tumour(coords: object, color: object = (200, 0, 0)) -> str:
    """One Tumor annotation as JSON text (``json.dumps`` writes NaN/Infinity as such)."""
    feature = {
        "type": "Feature",
        "id": "0e0e0e0e-0000-4000-8000-000000000001",
        "geometry": {"type": "Polygon", "coordinates": coords},
        "properties": {
            "objectType": "annotation",
            "classification": {"name": "Tumor", "color": color},
        },
    }
    return json.dumps({"type": "FeatureCollection", "features": [feature]})


_DEEP = "[" * 200_000 + "]" * 200_000
_BAD_ANNOTATIONS = {
    "nan-coordinate": (_tumour([[*_BOX[0][:2], [float("nan"), 400], *_BOX[0][3:]]]), "not finite"),
    "infinite-coordinate": (
        _tumour([[*_BOX[0][:2], [400, float("inf")], *_BOX[0][3:]]]),
        "not finite",
    ),
    "colour-strings": (_tumour(_BOX, ["a", "b", "c"]), "colour"),
    "colour-nan": (_tumour(_BOX, [float("nan"), 0, 0]), "colour"),
    "colour-overflow": (_tumour(_BOX, [1, 0, 0]).replace("[1, 0, 0]", "[1e400, 0, 0]"), "colour"),
    "deep-nesting": (_DEEP, "nested too deeply"),
}


@pytest.mark.parametrize("case", sorted(_BAD_ANNOTATIONS))
def test_bad_annotation_values_are_one_line(synced_copy: Path, case: str) -> None:
    """NaN/Infinity coordinates, colours that are not numbers, JSON nested 200,000 deep: one
    line naming the file (and feature), exit 1, nothing written."""
    text, needle = _BAD_ANNOTATIONS[case]
    export = synced_copy / "qupath-rkd" / "annotations" / "1.geojson"
    export.write_text(text)
    root = synced_copy.parent
    before = snapshot(root)
    code, out = _sync(str(synced_copy), *_fast())
    assert code == 1, out
    line = _one_error_line(out)
    assert needle in line and str(export) in line
    assert snapshot(root) == before


def test_deeply_nested_project_file_is_one_line(synced_copy: Path) -> None:
    qpproj = synced_copy / "project.qpproj"
    qpproj.write_text(_DEEP)
    root = synced_copy.parent
    before = snapshot(root)
    code, out = _sync(str(synced_copy), *_fast())
    assert code == 1, out
    assert "nested too deeply" in _one_error_line(out)
    assert snapshot(root) == before
