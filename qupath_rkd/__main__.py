"""``python -m qupath_rkd`` runs the CLI."""

from qupath_rkd.cli import main

if __name__ == "__main__":  # not again in the processes a local Dask cluster spawns
    main()
