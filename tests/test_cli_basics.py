"""The CLI as a user meets it: instant help, doctor, slide-info, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from qupath_rkd import __version__
from qupath_rkd.cli import cli


def test_help_and_version_import_no_heavy_modules() -> None:
    code = (
        "import sys\n"
        "from qupath_rkd.cli import cli\n"
        "for args in (['--help'], ['--version'], ['-h']):\n"
        "    try:\n"
        "        cli.main(args=args, prog_name='qupath-rkd', standalone_mode=False)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = [m for m in ('torch', 'openslide', 'paquo', 'jpype') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "HEAVY []" in result.stdout
    assert __version__ in result.stdout
    for name in ("sync", "train-patches", "predict", "evaluate", "slide-info", "doctor", "demo"):
        assert name in result.stdout


def test_doctor_reports_each_component() -> None:
    result = CliRunner().invoke(cli, ["doctor"])
    assert result.exit_code == 0, result.output
    for word in ("python", "torch", "openslide", "QuPath (paquo)"):
        assert word in result.output
    assert "PAQUO_QUPATH_DIR" in result.output or "found at" in result.output
    # the offline teacher's weights come with the wheel; the others say how to get them
    assert "[ok  ] teacher efficientnet_lite0" in result.output
    for name in ("wide_resnet50_2", "resnet18"):
        line = next(row for row in result.output.splitlines() if f"teacher {name}" in row)
        assert "torchvision's cache" in line or "--teacher-weights FILE" in line


def test_slide_info_on_a_real_svs(real_data: Path, tmp_path: Path) -> None:
    thumb = tmp_path / "thumb.png"
    result = CliRunner().invoke(
        cli,
        [
            "slide-info",
            str(real_data / "slides" / "cmu-1-small-region.svs"),
            "--thumbnail",
            str(thumb),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "2220 × 2967 px" in result.output
    assert "0.499" in result.output
    assert "aperio" in result.output
    assert "tissue" in result.output
    from PIL import Image

    with Image.open(thumb) as image:
        assert max(image.size) == 1024


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("kidney-48-5.tif", "cannot read this file"),
        ("does-not-exist.svs", "no such file"),
        (".", "is a directory"),
    ],
)
def test_slide_info_bad_input_is_one_line_without_traceback(
    real_data: Path, name: str, expected: str
) -> None:
    path = real_data / "slides" / name
    result = subprocess.run(
        [sys.executable, "-m", "qupath_rkd", "slide-info", str(path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert str(path.resolve().name) in result.stderr or str(path) in result.stderr


def test_slide_info_without_mpp_says_how_to_give_it(real_data: Path) -> None:
    path = real_data / "slides" / "tcga-cr-7395-01a-01-ts1.svs"
    result = CliRunner().invoke(cli, ["slide-info", str(path)])
    assert result.exit_code == 0
    assert "unknown" in result.output and "pass --slide-mpp" in result.output
    assert "--mpp " not in result.output
    result = CliRunner().invoke(cli, ["slide-info", str(path), "--slide-mpp", "0.25"])
    assert "0.25 (override)" in result.output


@pytest.mark.parametrize("px", ["0", "-5"])
def test_slide_info_thumbnail_px_below_one_is_refused(
    real_data: Path, tmp_path: Path, px: str
) -> None:
    """Regression: 0 gave a ZeroDivisionError traceback, -5 a full-resolution thumbnail."""
    thumb = tmp_path / "thumb.png"
    slide = real_data / "slides" / "cmu-1-small-region.svs"
    result = CliRunner().invoke(
        cli, ["slide-info", str(slide), "--thumbnail", str(thumb), "--thumbnail-px", px]
    )
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "--thumbnail-px" in result.output and "x>=1" in result.output
    assert not thumb.exists()


@pytest.mark.parametrize(
    ("name", "magic", "pil_format"),
    [
        ("thumb.jpg", b"\xff\xd8\xff", "JPEG"),
        ("thumb.JPEG", b"\xff\xd8\xff", "JPEG"),
        ("thumb.png", b"\x89PNG", "PNG"),
        ("thumb.tif", b"II*\x00", "TIFF"),
    ],
)
def test_slide_info_thumbnail_format_follows_the_suffix(
    real_data: Path, tmp_path: Path, name: str, magic: bytes, pil_format: str
) -> None:
    """Regression: ``--thumbnail x.jpg`` wrote PNG bytes into a .jpg."""
    from PIL import Image

    thumb = tmp_path / name
    slide = real_data / "slides" / "cmu-1-small-region.svs"
    result = CliRunner().invoke(
        cli, ["slide-info", str(slide), "--thumbnail", str(thumb), "--thumbnail-px", "64"]
    )
    assert result.exit_code == 0, result.output
    assert thumb.read_bytes().startswith(magic)
    with Image.open(thumb) as image:
        assert image.format == pil_format and max(image.size) == 64


@pytest.mark.parametrize("name", ["thumb.gif", "thumb"])
def test_slide_info_thumbnail_unknown_suffix_is_one_line_before_reading(
    real_data: Path, tmp_path: Path, name: str
) -> None:
    thumb = tmp_path / name
    slide = real_data / "slides" / "cmu-1-small-region.svs"
    result = subprocess.run(
        [sys.executable, "-m", "qupath_rkd", "slide-info", str(slide), "--thumbnail", str(thumb)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(error) == 1 and str(thumb) in error[0] and ".png" in error[0], result.stderr
    assert result.stdout == ""  # refused before the slide is read
    assert not thumb.exists()


def _all_commands() -> list[tuple[str, click.Command]]:
    import importlib

    from qupath_rkd.cli import _COMMANDS

    out = []
    for name, (target, _) in sorted(_COMMANDS.items()):
        module, attr = target.split(":")
        command = getattr(importlib.import_module(module), attr)
        subs = command.commands.values() if isinstance(command, click.Group) else [command]
        out.extend((f"{name} {sub.name}" if sub is not command else name, sub) for sub in subs)
    return out


def test_every_option_of_every_command_has_help() -> None:
    """Regression: --epochs, --batch-size and --seed had no help."""
    missing = [
        f"{name} {'/'.join(param.opts)}"
        for name, command in _all_commands()
        for param in command.params
        if isinstance(param, click.Option) and not param.hidden and not (param.help or "").strip()
    ]
    assert not missing, f"options without help: {missing}"
    result = CliRunner().invoke(cli, ["train-patches", "--help"])
    text = " ".join(result.output.split())
    assert "--epochs INTEGER RANGE Passes over the training patches." in text
    assert "--seed INTEGER Seeds" in text


def test_72_dpi_warning_is_one_sentence_naming_the_file(real_data: Path) -> None:
    """Regression: it was a raw logger line, 'WARNING qupath_rkd.slides.reader: ignoring
    implausible pixel size 352.8 x 352.8 µm/px', naming neither the file nor the fix."""
    path = real_data / "slides" / "openslide-python-boxes.tiff"
    result = subprocess.run(
        [sys.executable, "-m", "qupath_rkd", "slide-info", str(path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"Warning: {path}: ignoring the pixel size")
    assert "--slide-mpp" in lines[0] and "qupath_rkd.slides" not in lines[0]
