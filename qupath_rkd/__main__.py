"""``python -m qupath_rkd`` runs the CLI."""

from qupath_rkd.cli import main

main()
