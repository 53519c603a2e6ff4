"""Every script in groovy/ parses with a real Groovy parser; docs and names stay in sync.

Without Debian's ``groovy`` the parse test skips locally but FAILS under ``CI=true`` (``.ci/run``
installs it), so a syntax error cannot land.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from qupath_rkd.constants import PROJECT_SUBDIR, TOOL_TAG
from qupath_rkd.labels import FULLY_ANNOTATED_KEY, TUMOR_FREE_KEY

REPO = Path(__file__).resolve().parents[2]
GROOVY_DIR = REPO / "groovy"
SCRIPTS = sorted(GROOVY_DIR.glob("*.groovy"))
PARSE_CHECK = Path(__file__).with_name("parse_check.groovy")


def _groovy_env() -> tuple[str, dict[str, str]]:
    exe = shutil.which("groovy")
    if exe is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("groovy is not installed: apt-get install -y groovy (.ci/run does)")
        pytest.skip("groovy not installed (apt-get install -y groovy); CI=true makes this fail")
    env = dict(os.environ)
    java_home = env.get("JAVA_HOME")
    if not java_home or not (Path(java_home) / "bin" / "java").exists():
        java = shutil.which("java")
        if java is None:
            pytest.fail("groovy is installed but no java was found on PATH")
        env["JAVA_HOME"] = str(Path(os.path.realpath(java)).parents[1])
    return exe, env


def test_every_script_python_names_exists() -> None:
    """The scripts the package's messages and docs send the user to (``groovy/X.groovy``)
    are the ones in groovy/: renaming a script without its hints fails here."""
    named = set()
    for path in [*(REPO / "qupath_rkd").rglob("*.py"), REPO / "README.md", *REPO.glob("docs/*.md")]:
        named |= set(re.findall(r"groovy/(\w+\.groovy)", path.read_text(encoding="utf-8")))
    names = {p.name for p in SCRIPTS}
    assert {"export_annotations.groovy", "import_predictions.groovy", "run_sync.groovy"} <= named
    assert named <= names, f"named but not in groovy/: {sorted(named - names)}"


def test_every_script_parses_and_a_syntax_error_is_caught(tmp_path: Path) -> None:
    exe, env = _groovy_env()
    broken = tmp_path / "broken.groovy"
    # A real script with one closing brace removed from its last function: must fail to parse.
    text = (GROOVY_DIR / "export_annotations.groovy").read_text(encoding="utf-8")
    cut = text.rstrip().rfind("}")
    broken.write_text(text[:cut], encoding="utf-8")
    result = subprocess.run(
        [exe, str(PARSE_CHECK), *map(str, SCRIPTS), str(broken)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    out = result.stdout + result.stderr
    for script in SCRIPTS:
        assert f"OK {script}" in out, out
    assert f"FAIL {broken}" in out, out
    assert result.returncode == 1, out


def test_each_script_is_documented_at_its_top_and_in_the_readme() -> None:
    readme = (GROOVY_DIR / "README.md").read_text(encoding="utf-8")
    for script in SCRIPTS:
        text = script.read_text(encoding="utf-8")
        assert text.lstrip().startswith("/**"), f"{script.name} needs a doc comment at its top"
        assert "QuPath 0.5" in text.split("*/")[0], f"{script.name}: say which QuPath it targets"
        assert f"`{script.name}`" in readme, f"groovy/README.md does not describe {script.name}"


def _groovy_string(text: str, name: str) -> str:
    """The value of ``String NAME = "..."`` in a script."""
    found = re.search(rf'String {name} = "([^"]*)"', text)
    assert found, f"no String {name} = ... in the script"
    return found.group(1)


def test_scripts_use_the_python_side_names() -> None:
    """The folders, file names, manifest keys, tag and metadata keys in the scripts are the
    ones the Python side writes and reads (taken from its constants, not copied here)."""
    from qupath_rkd.qupath.backends.base import (
        MANIFEST_ENTRY_ID,
        MANIFEST_FORMAT,
        MANIFEST_IMAGES,
        MANIFEST_METADATA,
        ExchangeLayout,
    )

    layout = ExchangeLayout(Path(PROJECT_SUBDIR))
    annotations, predictions = layout.annotations_dir.name, layout.predictions_dir.name
    suffix = layout.annotations_file("7").name.removeprefix("7")
    assert layout.predictions_file("7").name == "7" + suffix
    for script in SCRIPTS:
        text = script.read_text(encoding="utf-8")
        assert f'resolve("{PROJECT_SUBDIR}")' in text, script.name
    imp = (GROOVY_DIR / "import_predictions.groovy").read_text(encoding="utf-8")
    assert _groovy_string(imp, "TOOL_TAG") == TOOL_TAG
    assert f'.resolve("{predictions}").resolve(entryId + "{suffix}")' in imp
    export = (GROOVY_DIR / "export_annotations.groovy").read_text(encoding="utf-8")
    assert f'.resolve("{annotations}")' in export
    assert f'outDir.resolve(entryId + "{suffix}")' in export
    assert f'outDir.resolve("{layout.manifest_path.name}")' in export
    assert f'manifest.put("format", "{MANIFEST_FORMAT}")' in export
    assert f'manifest.put("{MANIFEST_IMAGES}", images)' in export
    assert f'record.put("annotations", entryId + "{suffix}")' in export
    assert TUMOR_FREE_KEY in export and FULLY_ANNOTATED_KEY in export
    for name in (MANIFEST_ENTRY_ID, MANIFEST_METADATA):  # the keys the Python reader uses
        assert f'record.put("{name}"' in export, name
    for name in ("imageName", "uri", "pixelWidthMicrons", "annotations"):  # documented keys
        assert f'record.put("{name}"' in export, name


def test_python_manifest_writer_writes_the_scripts_keys(tmp_path: Path) -> None:
    """The Python writer of ``manifest.json`` (used by the demo) writes exactly the keys the
    export script puts in a record and in the manifest (read from the script, not copied)."""
    import json

    from qupath_rkd.qupath.backends.base import (
        MANIFEST_FORMAT_VERSION,
        ManifestImage,
        read_manifest,
        write_manifest,
    )

    export = (GROOVY_DIR / "export_annotations.groovy").read_text(encoding="utf-8")
    record_keys = re.findall(r'record\.put\("(\w+)"', export)
    manifest_keys = re.findall(r'manifest\.put\("(\w+)"', export)
    assert len(record_keys) >= 10 and len(manifest_keys) == 4
    assert f'manifest.put("formatVersion", {MANIFEST_FORMAT_VERSION})' in export
    images = [
        ManifestImage("10", "b", ("file:/b",), 0.5, 0.5, 20, 10, {"k": "v"}, 2),
        ManifestImage("9", "a", ("file:/a",), None, None, 30, 40),
    ]
    path = write_manifest(tmp_path / "manifest.json", images, qupath_version="0.5.1")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert set(data) == set(manifest_keys)
    assert data["formatVersion"] == MANIFEST_FORMAT_VERSION
    assert [r["entryID"] for r in data["images"]] == ["9", "10"]  # the script's compareIds
    for record in data["images"]:
        assert set(record) == set(record_keys)
    assert read_manifest(path)["10"]["metadata"] == {"k": "v"}


def test_import_replaces_exactly_what_python_writes() -> None:
    """Every detection the writer names starts with the script's TOOL_TAG (so a re-import
    replaces it), and the lesions carry the class and measurements documented for them."""
    from types import SimpleNamespace

    import numpy as np
    from shapely.geometry import box

    from qupath_rkd.inference.write import LESION_CLASS, LESION_MEASUREMENTS, lesion_features
    from qupath_rkd.lesions.extract import Lesion

    imp = (GROOVY_DIR / "import_predictions.groovy").read_text(encoding="utf-8")
    tag = _groovy_string(imp, "TOOL_TAG")
    lesion = Lesion(box(0, 0, 10, 10), 0.9, 0.8, 100.0, (5.0, 5.0), 10.0, 1)
    (feature,) = lesion_features(SimpleNamespace(lesions=[lesion]), "k", "1")  # type: ignore[arg-type]
    props = feature["properties"]
    assert props["name"].startswith(tag), props["name"]
    assert props["classification"]["name"] == LESION_CLASS
    assert set(LESION_MEASUREMENTS) <= set(props["measurements"])
    assert np.isclose(props["measurements"][LESION_MEASUREMENTS[0]], 0.9)
    assert f'named "{tag} lesion N"' in imp  # the script's doc says what it imports


def test_run_sync_uses_an_argument_list_and_no_shell() -> None:
    text = (GROOVY_DIR / "run_sync.groovy").read_text(encoding="utf-8")
    assert "new ProcessBuilder(command)" in text
    assert "List<String> command = [exe.getAbsolutePath()" in text
    assert not re.search(r"\b(sh|bash|cmd(\.exe)?)\b\s*[\"',]\s*\"?-c", text)
    assert ".execute()" not in text  # Groovy's String.execute() would split on spaces
    assert "isAbsolute()" in text


def test_the_import_scripts_read_the_slide_values_as_sync_writes_them() -> None:
    """Issue 10.4: the slide-level values file's name, format and field names, defined once in
    qupath_rkd/outputs.py, are the ones both import scripts read; the measurement and metadata
    names themselves come from the file (never hard-coded in a script), and the QuPath calls
    that put them on the image are there."""
    from qupath_rkd import outputs

    for name in ("import_predictions.groovy", "run_sync.groovy"):
        text = (GROOVY_DIR / name).read_text(encoding="utf-8")
        assert f'+ "{outputs.SLIDE_VALUES_SUFFIX}"' in text, name
        assert f'"{outputs.SLIDE_VALUES_FORMAT}"' in text, name
        for field in (
            outputs.SLIDE_FIELD_MEASUREMENTS,
            outputs.SLIDE_FIELD_MEASUREMENT_NAMES,
            outputs.SLIDE_FIELD_METADATA,
            outputs.SLIDE_FIELD_METADATA_KEYS,
        ):
            assert f'values.get("{field}")' in text, (name, field)
        for call in (
            "getRootObject().getMeasurementList()",
            "measurements.remove(",
            "measurements.put(",
            "entry.removeMetadataValue(",
            "entry.putMetadataValue(",
            "project.syncChanges()",
        ):
            assert call in text, (name, call)
        for measurement in (*outputs.SLIDE_MEASUREMENTS, *outputs.SLIDE_METADATA_KEYS):
            assert f'"{measurement}"' not in text, (name, measurement)
