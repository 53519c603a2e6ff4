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


def test_there_are_the_three_scripts() -> None:
    names = {p.name for p in SCRIPTS}
    assert {"export_annotations.groovy", "import_predictions.groovy", "run_sync.groovy"} <= names


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


def test_scripts_use_the_python_side_names() -> None:
    """The folder, tag and metadata keys in the scripts are the ones Python uses."""
    for script in SCRIPTS:
        text = script.read_text(encoding="utf-8")
        assert f'resolve("{PROJECT_SUBDIR}")' in text, script.name
    imp = (GROOVY_DIR / "import_predictions.groovy").read_text(encoding="utf-8")
    assert re.search(rf'String TOOL_TAG = "{re.escape(TOOL_TAG)}"', imp)
    export = (GROOVY_DIR / "export_annotations.groovy").read_text(encoding="utf-8")
    assert TUMOR_FREE_KEY in export and FULLY_ANNOTATED_KEY in export
    for name in ("entryID", "imageName", "uri", "pixelWidthMicrons", "metadata", "annotations"):
        assert f'record.put("{name}"' in export, name


def test_run_sync_uses_an_argument_list_and_no_shell() -> None:
    text = (GROOVY_DIR / "run_sync.groovy").read_text(encoding="utf-8")
    assert "new ProcessBuilder(command)" in text
    assert "List<String> command = [exe.getAbsolutePath()" in text
    assert not re.search(r"\b(sh|bash|cmd(\.exe)?)\b\s*[\"',]\s*\"?-c", text)
    assert ".execute()" not in text  # Groovy's String.execute() would split on spaces
    assert "isAbsolute()" in text
