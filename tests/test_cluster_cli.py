"""Cluster flags (issue 14) without a cluster: `--help` imports no Dask, an unreachable
scheduler is one line naming it and writes nothing, bad `[cluster]` values are one-line
config errors, and Dask's version check reads as one line."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from qupath_rkd.cli import cli


def test_help_of_predict_and_sync_imports_no_dask() -> None:
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from qupath_rkd.cli import cli\n"
        "for cmd in ('predict', 'sync'):\n"
        "    r = CliRunner().invoke(cli, [cmd, '--help'])\n"
        "    assert r.exit_code == 0 and '--local-cluster' in r.output, r.output\n"
        "print(sorted(m for m in ('dask', 'distributed') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_scheduler_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    model = tmp_path / "model.pt"
    model.write_bytes(b"not read: the scheduler is reached first")
    out = tmp_path / "out"
    address = f"tcp://127.0.0.1:{_closed_port()}"
    result = CliRunner().invoke(
        cli,
        ["predict", str(model), str(tmp_path / "s.tif"), "--out", str(out), "--scheduler",
         address, "--connect-timeout", "1"],
    )  # fmt: skip
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert address in lines[0] and "cannot reach" in lines[0]
    assert not out.exists()


def test_both_flags_and_a_bad_address_are_one_line_errors(tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"x")
    base = ["predict", str(model), str(tmp_path / "s.tif"), "--out", str(tmp_path / "o")]
    both = CliRunner().invoke(cli, [*base, "--scheduler", "h:8786", "--local-cluster", "2"])
    assert both.exit_code == 1 and "both a scheduler" in both.output
    bad = CliRunner().invoke(cli, [*base, "--scheduler", "not an address"])
    assert bad.exit_code == 1 and "not a scheduler address" in bad.output
    assert not (tmp_path / "o").exists()


def test_cluster_config_section(tmp_path: Path) -> None:
    from qupath_rkd.errors import ConfigError
    from qupath_rkd.sync.config import load_config

    cfg = load_config(None, {"cluster.scheduler": "10.0.0.5:8786"})
    assert cfg.get("cluster.scheduler") == "10.0.0.5:8786"
    with pytest.raises(ConfigError, match="both a scheduler") as info:
        load_config(None, {"cluster.scheduler": "h:1", "cluster.local_workers": 2})
    assert "\n" not in info.value.one_line()
    with pytest.raises(ConfigError, match="below the minimum"):
        load_config(None, {"cluster.local_workers": -1})
    (tmp_path / "qupath-rkd").mkdir()
    (tmp_path / "qupath-rkd" / "config.toml").write_text('[cluster]\nscheduler = "tcp://x"\n')
    with pytest.raises(ConfigError, match="not a scheduler address") as info:
        load_config(tmp_path)
    assert "config.toml" in info.value.one_line()


def test_dask_version_check_as_one_line() -> None:
    versions = pytest.importorskip("distributed.versions")
    from qupath_rkd.cluster.session import versions_one_line

    def pkgs(torch: str) -> dict:
        return {"packages": {"python": "3.11.7", "torch": torch}}

    msg = versions.error_message(pkgs("2.1"), {"w1": pkgs("2.2")}, pkgs("2.1"))["warning"]
    assert "Mismatched versions" in msg
    line = versions_one_line(msg)
    assert "\n" not in line
    assert "torch" in line and "2.1" in line and "2.2" in line and "python" not in line
