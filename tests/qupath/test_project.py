"""The project reader on the real QuPath 0.5.1 project and on moved/edited copies of it."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path, PurePosixPath, PureWindowsPath

import pytest

from qupath_rkd.errors import (
    MissingSlidesError,
    ProjectError,
    ProjectFormatError,
    ProjectNotFoundError,
)
from qupath_rkd.qupath.project import (
    file_uri,
    open_project,
    reconcile_with_slide,
    update_uris,
    uri_to_path,
)


@pytest.fixture()
def real_project(real_data: Path) -> Path:
    return real_data / "qupath-projects" / "qupath-0.5.1"


@pytest.fixture()
def project_copy(real_project: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(real_project, dst)
    for p in dst.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    dst.chmod(0o755)
    return dst


def _qpproj(path: Path) -> dict:
    return json.loads((path / "project.qpproj").read_text(encoding="utf-8"))


def _write_qpproj(path: Path, data: dict) -> None:
    (path / "project.qpproj").write_text(json.dumps(data, indent=2), encoding="utf-8")


def test_reads_the_real_qupath_051_project(real_project: Path) -> None:
    project = open_project(real_project)
    assert project.version == "0.5.1"
    assert [e.entry_id for e in project.entries] == ["1", "2", "7"]
    first = project.entries[0]
    assert first.name == "MTA3-8_GPC3 (2).svs"
    assert first.stored_path == "/Users/shuningliu/Downloads/MTA3-8_GPC3 (2).svs"  # %20 decoded
    assert (first.width_px, first.height_px) == (101591, 62506)
    assert first.mpp == pytest.approx(0.2532)
    assert first.is_openslide and not first.is_bioformats and not first.changes_frame
    assert first.args == ()
    assert first.data_dir == real_project / "data" / "1"
    # entry 7 has no serverBuilder.metadata and no data/7/server.json: size unknown, not guessed
    last = project.entries[2]
    assert (last.width_px, last.height_px, last.mpp) == (None, None, None)
    assert project.moved  # it was saved under /Users/shuningliu/...


def test_missing_slides_are_listed_in_one_error(real_project: Path) -> None:
    project = open_project(real_project)
    assert [e.found for e in project.entries] == [False, False, False]
    with pytest.raises(MissingSlidesError) as info:
        project.check_slides()
    message = str(info.value)
    assert "\n" not in message
    for entry in project.entries:
        assert entry.name in message
    assert "--slide-root" in message
    assert [name for name, _ in info.value.missing] == [e.name for e in project.entries]
    project.check_slides([])  # nothing to check, nothing missing


def test_reading_never_writes_the_project(project_copy: Path) -> None:
    qpproj = project_copy / "project.qpproj"
    before = (qpproj.read_bytes(), qpproj.stat().st_mtime_ns)
    listing = sorted(p.relative_to(project_copy) for p in project_copy.rglob("*"))
    open_project(project_copy, slide_root=project_copy)
    assert (qpproj.read_bytes(), qpproj.stat().st_mtime_ns) == before
    assert sorted(p.relative_to(project_copy) for p in project_copy.rglob("*")) == listing


def test_server_json_is_the_fallback_for_size_and_calibration(project_copy: Path) -> None:
    data = _qpproj(project_copy)
    del data["images"][0]["serverBuilder"]["metadata"]  # as QuPath 0.2 wrote entries
    _write_qpproj(project_copy, data)
    entry = open_project(project_copy).entries[0]
    assert (entry.width_px, entry.height_px) == (101591, 62506)  # from data/1/server.json
    assert entry.mpp == pytest.approx(0.2532)


def test_resolution_order_stored_relative_slide_root(project_copy: Path, tmp_path: Path) -> None:
    data = _qpproj(project_copy)
    # The project used to live in /old/place/proj; its slides in /old/place/slides.
    data["uri"] = "file:/old/place/proj/project.qpproj"
    stored = tmp_path / "elsewhere" / "stored é.svs"
    stored.parent.mkdir()
    stored.write_bytes(b"x")
    data["images"][0]["serverBuilder"]["uri"] = file_uri(stored)
    data["images"][1]["serverBuilder"]["uri"] = "file:/old/place/slides/rel%20one.svs"
    data["images"][2]["serverBuilder"]["uri"] = "file:/D:/scans/deep.svs"  # Windows, elsewhere
    _write_qpproj(project_copy, data)
    # copy/ plays the role of proj/: ../slides/ relative to it
    rel = project_copy.parent / "slides" / "rel one.svs"
    rel.parent.mkdir()
    rel.write_bytes(b"x")
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "deep.svs").write_bytes(b"x")

    project = open_project(project_copy, slide_root=root)
    sources = [(e.path_source, e.path) for e in project.entries]
    assert sources == [
        ("stored", stored),
        ("relative", rel),
        ("slide_root", root / "a" / "b" / "deep.svs"),
    ]
    project.check_slides()
    # Without the slide root the Windows one is missing, and the error names it.
    with pytest.raises(MissingSlidesError, match=r"D:\\scans\\deep\.svs"):
        open_project(project_copy).check_slides()


def test_stored_path_wins_over_relative_and_root(project_copy: Path, tmp_path: Path) -> None:
    data = _qpproj(project_copy)
    data["uri"] = "file:/old/proj/project.qpproj"
    stored = tmp_path / "s" / "a.svs"
    stored.parent.mkdir()
    stored.write_bytes(b"stored")
    data["images"][0]["serverBuilder"]["uri"] = file_uri(stored)
    _write_qpproj(project_copy, data)
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.svs").write_bytes(b"root")
    entry = open_project(project_copy, slide_root=root).entries[0]
    assert (entry.path_source, entry.path) == ("stored", stored)


def test_not_a_project_and_corrupt_project(tmp_path: Path, project_copy: Path) -> None:
    with pytest.raises(ProjectNotFoundError, match="no such file"):
        open_project(tmp_path / "nowhere")
    with pytest.raises(ProjectNotFoundError, match="not a QuPath project") as info:
        open_project(tmp_path)
    assert isinstance(info.value, FileNotFoundError)
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ProjectNotFoundError):
        open_project(tmp_path / "notes.txt")
    qpproj = project_copy / "project.qpproj"
    qpproj.write_text(qpproj.read_text()[:500], encoding="utf-8")  # truncated mid-write
    with pytest.raises(ProjectFormatError) as info2:
        open_project(project_copy)
    message = str(info2.value)
    assert str(qpproj) in message and "project.qpproj.backup" in message and "\n" not in message
    qpproj.write_text('{"images": 3}')
    with pytest.raises(ProjectFormatError, match="not a QuPath project file"):
        open_project(project_copy)
    shutil.copy(project_copy / "project.qpproj.backup", qpproj)
    with pytest.raises(ProjectError, match="slide-root"):
        open_project(project_copy, slide_root=tmp_path / "x")
    reopened = open_project(project_copy.parent / "copy" / ".." / "copy")
    assert reopened.qpproj_path == qpproj  # normalised


def test_older_and_wrapped_server_builders(project_copy: Path) -> None:
    data = _qpproj(project_copy)
    inner = copy.deepcopy(data["images"][0]["serverBuilder"])
    data["images"][0]["serverBuilder"] = {
        "builderType": "rotated",
        "rotation": "ROTATE_90",
        "builder": inner,
    }
    data["images"][1]["serverBuilder"] = {
        "builderType": "uri",
        "providerClassName": "qupath.lib.images.servers.bioformats.BioFormatsServerBuilder",
        "uri": "file:/scans/a.vsi",
        "args": ["--series", "2"],
    }
    data["images"][2] = {"path": "/scans/old.svs", "name": "old.svs"}  # QuPath 0.1-style entry
    data["images"][2]["entryID"] = 9
    _write_qpproj(project_copy, data)
    e0, e1, e2 = open_project(project_copy).entries
    assert e0.builder_type == "rotated" and e0.changes_frame and e0.is_openslide
    assert e0.uri == inner["uri"] and e0.width_px == 101591
    assert e1.is_bioformats and e1.args == ("--series", "2")
    assert e2.entry_id == "9" and e2.stored_path == "/scans/old.svs" and e2.name == "old.svs"
    with pytest.raises(ProjectError, match="rotated"):
        reconcile_with_slide(e0, slide_width_px=101591, slide_height_px=62506)


def test_duplicate_entry_ids_are_refused(project_copy: Path) -> None:
    data = _qpproj(project_copy)
    data["images"][2]["entryID"] = 1
    _write_qpproj(project_copy, data)
    with pytest.raises(ProjectFormatError, match="entry ID 1 appears twice"):
        open_project(project_copy)


def test_reconcile_with_slide_sets_the_bounds_offset(real_project: Path) -> None:
    entry = open_project(real_project).entries[0]  # 101591 x 62506 in QuPath
    same = reconcile_with_slide(
        entry, slide_width_px=101591, slide_height_px=62506, bounds_offset_px=(300, 200)
    )
    assert same.bounds_offset_px == (0, 0)
    uncropped = reconcile_with_slide(
        entry,
        slide_width_px=90000,
        slide_height_px=60000,
        bounds_offset_px=(300, 200),
        full_size_px=(101591, 62506),
    )
    assert uncropped.bounds_offset_px == (-300, -200)
    with pytest.raises(ProjectError, match="101591x62506 px in QuPath"):
        reconcile_with_slide(entry, slide_width_px=100, slide_height_px=100)


def test_uris_round_trip_like_java() -> None:
    p = Path("/data/scans/échantillon (2) #1.svs")
    uri = file_uri(p)
    assert uri.startswith("file:/data/scans/") and " " not in uri and "é" not in uri
    assert "(2)" in uri  # Java keeps parentheses, as in the real project file
    assert uri_to_path(uri) == PurePosixPath(p)
    assert uri_to_path("file:/D:/a%20b/c.svs") == PureWindowsPath("D:/a b/c.svs")
    assert uri_to_path("file://server/share/c.svs") == PureWindowsPath("//server/share/c.svs")
    assert uri_to_path("file:///tmp/x.svs") == PurePosixPath("/tmp/x.svs")
    assert uri_to_path("https://example.org/x.svs") is None
    assert uri_to_path(None) is None


def test_update_uris_only_when_asked_with_a_backup(project_copy: Path, tmp_path: Path) -> None:
    root = tmp_path / "slides"
    root.mkdir()
    for name in ("MTA3-8_GPC3 (2).svs", "MTA3-1_GPC3.svs"):
        (root / name).write_bytes(b"x")
    qpproj = project_copy / "project.qpproj"
    original = qpproj.read_bytes()
    project = open_project(project_copy, slide_root=root)
    planned = update_uris(project, dry_run=True)
    assert qpproj.read_bytes() == original  # dry run writes nothing
    assert [c.entry_id for c in planned] == ["1", "7"]
    changes = update_uris(project)
    assert changes == planned
    assert (project_copy / "project.qpproj.qupath-rkd.bak").read_bytes() == original
    before, after = json.loads(original), json.loads(qpproj.read_bytes())
    assert after["images"][0]["serverBuilder"]["uri"] == file_uri(root / "MTA3-8_GPC3 (2).svs")
    # everything else is unchanged
    for i in (0, 2):
        after["images"][i]["serverBuilder"]["uri"] = before["images"][i]["serverBuilder"]["uri"]
    assert after == before
    reopened = open_project(project_copy)
    assert [e.path_source for e in reopened.entries] == ["stored", None, "stored"]
    assert update_uris(reopened) == []  # nothing left to change


def test_every_uri_of_a_composite_builder_is_found(project_copy: Path) -> None:
    data = _qpproj(project_copy)
    data["images"][0]["serverBuilder"] = {
        "builderType": "sparse",
        "regions": [
            {"region": {"x": 0}, "serverBuilder": {"builderType": "uri", "uri": "file:/a/1.tif"}},
            {"region": {"x": 9}, "serverBuilder": {"builderType": "uri", "uri": "file:/a/2.tif"}},
        ],
    }
    _write_qpproj(project_copy, data)
    entry = open_project(project_copy).entries[0]
    assert entry.uris == ("file:/a/1.tif", "file:/a/2.tif") and entry.changes_frame


def test_names_in_another_unicode_form_or_case_are_found(
    project_copy: Path, tmp_path: Path
) -> None:
    import unicodedata

    data = _qpproj(project_copy)
    nfd = unicodedata.normalize("NFD", "Lymphknoten é.svs")  # as macOS writes names
    data["images"][0]["serverBuilder"]["uri"] = file_uri(Path("/mac/scans") / nfd)
    data["images"][1]["serverBuilder"]["uri"] = "file:/mac/scans/UPPER.SVS"
    _write_qpproj(project_copy, data)
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    nfc_file = root / "sub" / unicodedata.normalize("NFC", "Lymphknoten é.svs")
    nfc_file.write_bytes(b"x")
    (root / "sub" / "upper.svs").write_bytes(b"x")
    e0, e1, _ = open_project(project_copy, slide_root=root).entries
    assert (e0.path_source, e0.path) == ("slide_root", nfc_file)
    assert e1.path == root / "sub" / "upper.svs"
