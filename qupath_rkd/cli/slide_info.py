"""`qupath-rkd slide-info SLIDE`: format, pyramid, size, µm/px, tissue; optional thumbnail."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from qupath_rkd.cli.flags import MPP_TYPE, deprecated_alias

if TYPE_CHECKING:
    from qupath_rkd.slides import Slide, TissueMask


@click.command("slide-info")
@click.argument("slide", type=click.Path(path_type=Path))
@click.option(
    "--slide-mpp",
    type=MPP_TYPE,
    default=None,
    help="The slide's level-0 µm/px, instead of the metadata.",
)
@deprecated_alias("--mpp", "--slide-mpp", "slide_mpp")
@click.option(
    "--thumbnail",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write a thumbnail with the tissue mask outlined in green; the suffix (.png, .jpg, "
    ".jpeg, .tif, .tiff) sets the format.",
)
@click.option(
    "--thumbnail-px",
    type=click.IntRange(min=1),
    default=1024,
    show_default=True,
    help="Thumbnail's longer side in pixels (at least 1).",
)
def slide_info(
    slide: Path, slide_mpp: float | None, thumbnail: Path | None, thumbnail_px: int
) -> None:
    """Describe a whole-slide image: format, pyramid levels, size, µm/px and tissue fraction."""
    from qupath_rkd.slides import open_slide, tissue_mask

    image_format = None if thumbnail is None else _thumbnail_format(thumbnail)
    with open_slide(slide, mpp=slide_mpp) as wsi:
        click.echo(f"file          {wsi.path}")
        click.echo(f"format        {wsi.format}")
        click.echo(f"size          {wsi.width_px} × {wsi.height_px} px (level 0)")
        if wsi.bounds_offset_px != (0, 0):
            click.echo(
                f"bounds        offset {wsi.bounds_offset_px} px (QuPath's frame starts there)"
            )
        click.echo(f"levels        {wsi.level_count}")
        for index, ((w, h), ds) in enumerate(
            zip(wsi.level_dimensions, wsi.level_downsamples, strict=True)
        ):
            click.echo(f"  level {index}     {w} × {h} px, downsample {ds:.4g}")
        level0_mpp = wsi.mpp_or_none
        if level0_mpp is None:
            click.echo(
                "µm/px         unknown — pass --slide-mpp (slide-info, predict, evaluate; "
                'sync: --slide-mpp "IMAGE=MPP")'
            )
        else:
            size_mm = (wsi.width_px * level0_mpp / 1000, wsi.height_px * level0_mpp / 1000)
            click.echo(
                f"µm/px         {level0_mpp:.4g} ({wsi.mpp_source}); "
                f"{size_mm[0]:.2f} × {size_mm[1]:.2f} mm"
            )
        mask = tissue_mask(wsi)
        click.echo(f"tissue        {100 * mask.fraction:.1f} % of the slide")
        if thumbnail is not None:
            assert image_format is not None
            _write_thumbnail(wsi, mask, thumbnail, thumbnail_px, image_format)
            click.echo(f"thumbnail     {thumbnail}")


#: Thumbnail file suffix -> the PIL format written.
_THUMBNAIL_FORMATS: dict[str, str] = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}


def _thumbnail_format(out: Path) -> str:
    """The PIL format ``out``'s suffix names; a usage error (before any slide is read) if none.

    Raises:
        click.BadParameter: the suffix is not one of ``_THUMBNAIL_FORMATS`` or the folder does
            not exist.
    """
    image_format = _THUMBNAIL_FORMATS.get(out.suffix.lower())
    if image_format is None:
        raise click.BadParameter(
            f"{out}: unknown image suffix {out.suffix or '(none)'!r}; "
            f"end the file name with one of {', '.join(_THUMBNAIL_FORMATS)}",
            param_hint="--thumbnail",
        )
    if not out.parent.is_dir():
        raise click.BadParameter(
            f"{out.parent}: folder does not exist; create it or choose another path",
            param_hint="--thumbnail",
        )
    return image_format


def _write_thumbnail(
    wsi: Slide, mask: TissueMask, out: Path, max_px: int, image_format: str
) -> None:
    """Thumbnail (``image_format``: PNG, JPEG or TIFF) with the tissue mask's outline drawn in
    green, written atomically."""
    import io

    import numpy as np
    from PIL import Image
    from scipy import ndimage

    from qupath_rkd.io_utils import atomic_write_bytes

    rgb, _ = wsi.thumbnail(max_px)
    tissue = Image.fromarray(mask.mask.astype(np.uint8) * 255).resize(
        (rgb.shape[1], rgb.shape[0]), Image.Resampling.NEAREST
    )
    tissue_arr = np.asarray(tissue) > 0
    edge = tissue_arr & ~ndimage.binary_erosion(tissue_arr, iterations=2)
    out_rgb = rgb.copy()
    out_rgb[edge] = (0, 200, 0)
    buffer = io.BytesIO()
    Image.fromarray(out_rgb).save(buffer, format=image_format)
    atomic_write_bytes(out, buffer.getvalue())
