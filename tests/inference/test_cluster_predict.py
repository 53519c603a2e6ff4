"""Slides over a local Dask cluster (issue 14): the same bytes as one process, the checkpoint
loaded once per worker, a worker that cannot see a slide, a worker killed mid-slide.

One ``LocalCluster`` of 2 worker processes serves the whole module (starting one costs
seconds). Its workers inherit the fault-injection variables, disarmed (the marker file
exists); the kill test arms them by deleting the marker.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

pytest.importorskip("distributed")

from qupath_rkd.cluster.spec import ClusterSpec
from qupath_rkd.cluster.worker import (
    FAULT_ENV,
    FAULT_MARKER_ENV,
    KILL_ONCE_FAULT,
)

from .conftest import median_threshold

#: Files that must be byte-identical (done.json and run.json hold times and dates).
COMPARED = ("heatmap.npy", "heatmap.json", "lesions.geojson", "tiles.csv", "tiles.geojson")


@pytest.fixture(scope="module")
def marker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fault") / "killed-once"
    path.touch()  # disarmed
    return path


@pytest.fixture(scope="module")
def session(marker: Path):
    from qupath_rkd.cluster.session import ClusterSession

    mp = pytest.MonkeyPatch()
    mp.setenv(FAULT_ENV, KILL_ONCE_FAULT)  # inherited by the workers spawned now
    mp.setenv(FAULT_MARKER_ENV, str(marker))
    try:
        with ClusterSession(ClusterSpec(local_workers=2), device="cpu") as s:
            yield s
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory, semireal) -> list[Path]:
    from qupath_rkd.demo import LesionSpec, build_semireal_slide, demo_patch_dirs

    normal, tumour = demo_patch_dirs()
    second = build_semireal_slide(
        tmp_path_factory.mktemp("slides2") / "semireal_b.tif",
        normal_dir=normal,
        tumor_dir=tumour,
        width_px=1000,
        height_px=800,
        lesions=[LesionSpec((500.0, 400.0), 400.0)],
        seed=5,
        max_patches=300,
    )
    return [semireal.path, second.path]


@pytest.fixture(scope="module")
def config(model, semireal):
    from qupath_rkd.inference import InferenceConfig, predict_slide

    probe = predict_slide(semireal.path, model, config=InferenceConfig(num_workers=0))
    # lesions exist at the median (the model is untrained); one torch thread, as on workers
    return InferenceConfig(
        threshold=median_threshold(probe.heatmap.probability), num_workers=0, torch_threads=1
    )


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, slides, model, config) -> Path:
    from qupath_rkd.inference.batch import predict_slides

    out = tmp_path_factory.mktemp("one-process")
    runs = predict_slides(slides, model, out, config=config)
    assert [r.status for r in runs] == ["ok", "ok"]
    return out


def digests(out: Path) -> dict[str, str]:
    names = [*COMPARED, "slide_scores.csv"]
    files = [p for p in sorted(out.rglob("*")) if p.is_file() and p.name in names]
    files += sorted((out / "camelyon16").glob("*.csv"))
    return {
        p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files
    }


def test_local_cluster_writes_the_bytes_of_one_process(
    tmp_path, session, slides, model, model_path, config, one_process
) -> None:
    from qupath_rkd.cluster.worker import load_counts
    from qupath_rkd.inference.batch import predict_slides

    out = tmp_path / "cluster"
    runs = predict_slides(slides, model, out, config=config, cluster=session, checkpoint=model_path)
    assert [r.status for r in runs] == ["ok", "ok"]
    expected = digests(one_process)
    assert len(expected) == 2 * len(COMPARED) + 3  # 2 camelyon16 CSVs + slide_scores.csv
    lesions = (one_process / "semireal_a" / "lesions.geojson").read_text()
    assert '"Tumor"' in lesions  # something to compare: lesions were found
    assert digests(out) == expected
    # again, with the model already on the workers: loaded once per worker, not per slide
    again = predict_slides(
        slides[1:], model, tmp_path / "again", config=config, cluster=session,
        checkpoint=model_path,
    )  # fmt: skip
    assert [r.status for r in again] == ["ok"]
    counts = session.run_on_workers(load_counts)
    assert len(counts) == 2
    assert all(set(c.values()) <= {1} for c in counts.values()), counts
    assert sum(sum(c.values()) for c in counts.values()) >= 1


def test_a_slide_the_workers_cannot_see(session, model_path, config) -> None:
    """The client checks that a slide exists before sending it; a worker that does not find
    it (another machine, no shared filesystem) says the path must be visible to workers."""
    from qupath_rkd.cluster.worker import SlideFailure, predict_on_worker

    sha = hashlib.sha256(model_path.read_bytes()).hexdigest()
    future = session._client.submit(
        predict_on_worker, sha, "cpu", "/nowhere/on/the/worker.tif", config, None, 1
    )
    failure = future.result()
    assert isinstance(failure, SlideFailure)
    text = failure.exception().one_line()
    assert "/nowhere/on/the/worker.tif" in text
    assert "must be visible to the workers" in text


def test_a_slide_the_client_cannot_see_fails_as_in_one_process(
    tmp_path, session, model, model_path, config, slides
) -> None:
    from qupath_rkd.inference.batch import predict_slides

    missing = tmp_path / "missing.tif"
    runs = predict_slides(
        [missing, slides[0]], model, tmp_path / "out", config=config, cluster=session,
        checkpoint=model_path,
    )  # fmt: skip
    local = predict_slides([missing], model, tmp_path / "local", config=config)
    assert [r.status for r in runs] == ["failed", "ok"]
    assert runs[0].error == local[0].error


def test_a_worker_killed_mid_slide_is_retried(
    tmp_path, session, marker, slides, model, model_path, config, one_process
) -> None:
    from qupath_rkd.inference.batch import predict_slides

    marker.unlink()  # armed: the first worker to score a batch kills itself, once
    out = tmp_path / "killed"
    runs = predict_slides(slides, model, out, config=config, cluster=session, checkpoint=model_path)
    assert marker.exists(), "no worker was killed: the test tested nothing"
    assert [r.status for r in runs] == ["ok", "ok"], [r.error for r in runs]
    assert [r.status for r in runs] == ["ok", "ok"]
    assert digests(out) == digests(one_process)


def test_the_workers_render_the_files_the_client_writes(
    session, slides, model, model_path, config, one_process
) -> None:
    """A ``predict`` task renders its slide's files on the worker (the client only writes
    their bytes): they are the files of the one-process run, the overlay PNG included."""
    from qupath_rkd.cluster.worker import SlideResult, predict_on_worker
    from qupath_rkd.inference.write import FilesRequest, RenderedSlide
    from qupath_rkd.outputs import SlideOutputs, slide_id_for

    sha = hashlib.sha256(model_path.read_bytes()).hexdigest()
    key = config.resolved(model).key(model.model_id)
    slide = slides[0]
    files = FilesRequest(key, slide_id_for(slide), slide.name)
    result = session._client.submit(
        predict_on_worker, sha, "cpu", str(slide), config, None, 1, None, files, pure=False
    ).result()
    assert isinstance(result, SlideResult)
    rendered = result.rendered
    assert isinstance(rendered, RenderedSlide)
    assert (rendered.key, rendered.slide_id) == (key, "semireal_a")
    written = SlideOutputs(one_process, "semireal_a")
    for name in ("heatmap_npy", "heatmap_json", "lesions_geojson", "tiles_geojson",
                 "tiles_csv", "submission_csv", "heatmap_png"):  # fmt: skip
        assert getattr(rendered, name) == getattr(written, name).read_bytes(), name
