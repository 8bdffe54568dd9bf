"""``adzoo-data data=<name> data.root=...``: what a data set's loader finds, checked, before anything trains on it.

It composes the same config as ``adzoo-train`` (so every ``data.*`` override means the same), indexes the data,
prints the categories with their images per split and defect type and the masks found or missing, then checks
every image and mask. A bad tree gives the loader's one-line error and exit status 2.
"""

from __future__ import annotations

import argparse
import sys

from adzoo._config import config_dir, register_resolvers
from adzoo.errors import run_app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="adzoo-data",
        description="Index a data set as adzoo-train would (data=<name> data.root=<folder> ...), print what was "
        "found per category (images per split and defect type, masks found/missing), and check every file.",
        epilog="keys people set most: data=<name> (btad, mpdd, ksdd2, mvtec, mvtec_ad2, mvtec_loco, mvtec_3d, visa, "
        "real_iad, manifest, folder, ...), data.root=<folder>, data.categories=[a,b]; any adzoo-train data.* key "
        "works",
    )
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. data=btad data.root=/data/BTech_Dataset")
    parser.add_argument("--no-check", action="store_true", help="print the summary only; do not read every file")
    args = parser.parse_args(argv)
    return run_app(lambda: _check(args.overrides, not args.no_check), "adzoo-data")


def _check(overrides: list[str], check: bool) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    register_resolvers()
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    datamodule = instantiate(cfg.data)  # indexes the source and applies data.categories; reads no image yet
    source, categories = datamodule.source, datamodule.categories
    describe = getattr(source, "summary", None)
    print(describe(categories) if callable(describe) else f"{type(source).__name__}: categories {categories}")
    if check:
        datamodule.validate()
        print("every image and mask read as expected")


if __name__ == "__main__":
    sys.exit(main())
