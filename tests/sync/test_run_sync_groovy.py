"""Issue 9, point 6 of Deliver: ``groovy/run_sync.groovy`` does what its header says — a
failed sync stops the script before any image is changed or saved."""

from __future__ import annotations

import re
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "groovy" / "run_sync.groovy"


def test_a_failed_sync_stops_before_any_image_is_changed() -> None:
    text = SCRIPT.read_text(encoding="utf-8")
    header = text.split("*/", 1)[0]
    assert "if it fails (any non-zero exit code), stops" in header
    assert "no image is changed or saved" in header
    check = re.search(r"if \(exitCode != 0\) \{\s*(//[^\n]*\n\s*)*throw new RuntimeException", text)
    assert check is not None, "a non-zero exit code must throw at once"
    body = text[: text.index("boolean isToolObject")]
    for change in ("saveImageData", "removeObjects", "addObjects", "fireHierarchyUpdate"):
        assert body.index(change) > check.start(), f"{change} before the exit-code check"
    assert body.count("exitCode != 0") == 1  # no second, later check (after the imports)
