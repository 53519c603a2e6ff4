"""`qupath-rkd score-patches`: score folders of patches with a trained model -> CSV."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import click


@click.command("score-patches")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="CSV to write: path,score,probability.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=64,
    show_default=True,
    help="Patches scored at once; lower it if memory runs out.",
)
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N")
@click.option(
    "--workers",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="DataLoader worker processes for reading images.",
)
def score_patches(
    model: Path, dirs: tuple[Path, ...], out: Path, batch_size: int, device: str, workers: int
) -> None:
    """Score every PNG/JPEG/TIFF patch found (recursively) under DIRS with MODEL.

    Writes one row per readable image: path, raw score (the head's logit averaged over its
    test-time views, or the RD anomaly score), calibrated tumour probability.
    Unreadable files are skipped and reported.
    """
    from qupath_rkd.io_utils import atomic_write_text
    from qupath_rkd.model.scorer import load_model
    from qupath_rkd.training.scoring import score_folders

    if not out.parent.is_dir():
        raise click.UsageError(f"the folder of --out {out} does not exist")
    trained = load_model(model, device=device)
    from qupath_rkd.cli.progress import ProgressRenderer

    with ProgressRenderer() as progress:
        result = score_folders(
            trained, dirs, batch_size=batch_size, num_workers=workers, progress=progress
        )
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "score", "probability"])
    for path, s, p in zip(result.paths, result.scores, result.probabilities, strict=True):
        writer.writerow([str(path), f"{float(s):.6f}", f"{float(p):.6f}"])
    atomic_write_text(out, buf.getvalue())
    if result.skipped:
        shown = ", ".join(str(p) for p in result.skipped[:3])
        more = f" and {len(result.skipped) - 3} more" if len(result.skipped) > 3 else ""
        click.echo(
            f"Warning: {len(result.skipped)} unreadable images skipped: {shown}{more}", err=True
        )
    click.echo(f"Wrote {len(result.paths)} rows to {out}.")
