"""MVTec AD 2 (Heckler-Kram et al., 2025) read in the layout it is distributed in; no conversion step.

Layout, per category (``can, fabric, fruit_jelly, rice, sheet_metal, vial, wallplugs, walnuts``)::

    <root>/<category>/train/good/*.png                      normal training images
    <root>/<category>/validation/good/*.png                 normal validation images: the datamodule's validation split
    <root>/<category>/test_public/{good,bad}/*.png          the test split (its labels and masks are public)
    <root>/<category>/test_public/ground_truth/bad/<stem>_mask.png   0/255 mask of each bad image
    <root>/<category>/test_private/*.png                    flat, no labels, no masks: predict-only
    <root>/<category>/test_private_mixed/*.png              the same under seen and unseen lighting: predict-only

The private sets are indexed but never part of train, validation or test (nothing here can score them). Their
images are listed by :meth:`MVTecAD2Source.private_images`, and ``python -m adzoo.data.mvtec_ad2 <run folder>
<data root> [<output folder>]`` prints one ``adzoo-predict`` command per category and private set, which writes
``scores.csv`` (and masks at the run's image size) to ``<output>/<category>/<set>``. MVTec's evaluation server
wants full-resolution maps instead: ``python -m adzoo.data.mvtec_ad2 --submission <run folder> [<data root>]
[<output folder>]`` (:func:`write_submission`) writes ``anomaly_images/<category>/<set>/<stem>.tiff`` (float16, the
map bilinearly resized to the image's own size) and ``anomaly_images_thresholded/<category>/<set>/<stem>.png``
(0/255, the map at the run's pixel threshold, fitted on the validation split), the folders MVTec's
``check_and_prepare_data_for_upload.py`` checks before upload.

Images are large (8,000 PNGs, about 30 GB; several megapixels each, non-square, sizes differ between categories):
each is decoded at full size and resized to ``data.image_size`` (square) when read, and masks are checked against
their image's full size. Decoding is the cost of a lazy epoch, so ``data.preload=auto`` decodes each split once.
"""

# Layout source: MVTec's mvtec_ad_2_public_offline.py (MVTecAD2_public_code_utils, with the data) and anomalib's
# make_mvtec2_dataset (MVTecAD2Dataset): split names, [0-9][0-9][0-9]*.png, flat private folders, <f> -> <f>_mask.png.

from __future__ import annotations

import io
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adzoo.data.layouts import BenchmarkFolderSource, Splits, anomalous_records, folder_images, normal_records
from adzoo.data.mvtec import (
    DataError,
    _list_images,
    _Skipped,
    check_image,
    read_image,
)
from adzoo.errors import ConfigError
from adzoo.utils.io import atomic_replace, read_json

log = logging.getLogger(__name__)

#: the eight scenarios (MVTEC_AD_2_OBJECTS in MVTec's own dataset class)
CATEGORIES = ("can", "fabric", "fruit_jelly", "rice", "sheet_metal", "vial", "wallplugs", "walnuts")
PRIVATE_SETS = ("test_private", "test_private_mixed")
ROOT_ENV = "MVTEC_AD2_ROOT"


class MVTecAD2Source(BenchmarkFolderSource):
    """MVTec AD 2: ``test_public`` is the test split, ``validation/good`` the validation split, and the private sets
    are listed for prediction only (see the module docstring)."""

    benchmark = "MVTec AD 2"
    layout = (
        "<root>/<category>/{train/good, validation/good, test_public/{good,bad}, "
        "test_public/ground_truth/bad/<stem>_mask.png}"
    )

    def __init__(self, root: str | os.PathLike | None, categories: Sequence[str] | str = "all") -> None:
        self._private: dict[str, dict[str, list[Path]]] = {}
        super().__init__(root, categories)

    def _index(self, category: str, skipped: _Skipped) -> Splits:
        base = self.root / category
        train = folder_images(base / "train" / "good", "the normal training images", skipped)
        val = folder_images(base / "validation" / "good", "the normal validation images MVTec AD 2 ships", skipped)
        test_dir = base / "test_public"
        good = folder_images(test_dir / "good", "the normal images of the public test set", skipped)
        bad = folder_images(test_dir / "bad", "the anomalous images of the public test set", skipped)
        gt_dir = test_dir / "ground_truth" / "bad"
        if not gt_dir.is_dir():
            raise DataError(f"missing folder {gt_dir} (expected the masks of {test_dir / 'bad'}, <stem>_mask.png)")
        self._private[category] = {
            name: _list_images(base / name, skipped) if (base / name).is_dir() else [] for name in PRIVATE_SETS
        }
        return (
            normal_records(train, category),
            normal_records(val, category),
            normal_records(good, category, pixel_labels=True)
            + anomalous_records(bad, gt_dir, "_mask.png", category, "bad"),
        )

    def private_images(self, category: str, split: str = "test_private") -> list[Path]:
        """The images of one private set (``test_private`` or ``test_private_mixed``) of an indexed category."""
        if split not in PRIVATE_SETS:
            raise DataError(f"private set {split!r}: expected one of {', '.join(PRIVATE_SETS)}")
        if category not in self._private:
            raise DataError(f"category {category!r} is not indexed (indexed: {', '.join(self._categories)})")
        images = self._private[category][split]
        if not images:
            raise DataError(f"no private images for {category}: expected {self.root / category / split}/*.png")
        return list(images)

    def trained_categories(self, run_dir: Path) -> list[str]:
        """The categories a finished run was trained on, each one indexed here (else an error naming the run)."""
        from adzoo.predict import RunFolderError

        results = run_dir / "results.json"
        try:
            trained = (read_json(results).get("data") or {}).get("categories") or []
        except (OSError, ValueError, AttributeError) as exc:
            raise RunFolderError(f"{results}: not a readable results.json of a finished run ({exc})") from exc
        unknown = sorted(set(trained) - set(self._categories))
        if unknown:
            raise DataError(f"the run {run_dir} was trained on {unknown}, which are not categories under {self.root}")
        return list(trained)

    def predict_commands(self, run: str | os.PathLike, output: str | os.PathLike | None = None) -> list[str]:
        """One ``adzoo-predict`` command per category the ``run`` was trained on and private set on disk.

        A separate-setting run (``categories/<name>/checkpoints``) gets ``category=<name>``; a unified run scores
        each of its categories with its one model. Outputs go to ``<output>/<category>/<set>`` (default
        ``<run>/mvtec_ad2_private``).
        """
        from adzoo.predict import run_categories

        run_dir = Path(run).expanduser()
        trained = self.trained_categories(run_dir)
        out = Path(output).expanduser() if output is not None else run_dir / "mvtec_ad2_private"
        separate = bool(run_categories(run_dir))
        commands = []
        for category in trained:
            for split in PRIVATE_SETS:
                if not self._private[category][split]:
                    continue
                words = ["adzoo-predict", f"ckpt={run_dir}", f"input={self.root / category / split}"]
                words += [f"output={out / category / split}"] + ([f"category={category}"] if separate else [])
                commands.append(" ".join(shlex.quote(w) for w in words))
        return commands

    def summary(self, categories: Sequence[str] | None = None) -> str:
        """The shared summary plus the private sets' sizes, so ``adzoo-data`` shows they were found (and left out)."""
        lines = [super().summary(categories)]
        for category in self._categories if categories is None else categories:
            sizes = ", ".join(f"{name} {len(self._private[category][name])}" for name in PRIVATE_SETS)
            lines.append(f"  {category}: {sizes} (predict-only: no ground truth, never in train/validation/test)")
        return "\n".join(lines)


#: where :func:`write_submission` puts the maps and the thresholded masks (MVTec AD 2's submission layout)
SUBMISSION_MAPS, SUBMISSION_MASKS = "anomaly_images", "anomaly_images_thresholded"


def write_submission(
    source: MVTecAD2Source,
    run: str | os.PathLike,
    output: str | os.PathLike | None = None,
    sets: Sequence[str] = PRIVATE_SETS,
    device: str = "cpu",
    batch_size: int = 8,
) -> dict[str, int]:
    """Score the private sets with the run and write MVTec AD 2's submission folder (default
    ``<run>/mvtec_ad2_submission``): per image a float16 TIFF of the map at the image's own size and, where the run
    has a pixel threshold, its 0/255 PNG mask. Each file is written atomically and an image whose files exist is
    skipped, so an interrupted export resumes. Returns {"<category>/<set>": images written}."""
    from PIL import Image

    from adzoo.predict import check_device, image_size_of, load_run, run_categories

    check_device(device)
    run_dir = Path(run).expanduser()
    out = Path(output).expanduser() if output is not None else run_dir / "mvtec_ad2_submission"
    unknown = sorted(set(sets) - set(PRIVATE_SETS))
    if unknown:
        raise ConfigError(f"sets={unknown}: expected some of {', '.join(PRIVATE_SETS)}")
    trained = source.trained_categories(run_dir)
    separate = bool(run_categories(run_dir))
    written: dict[str, int] = {}
    models: dict[str | None, Any] = {}
    for category in trained:
        key = category if separate else None
        if key not in models:
            model, config, ref = load_run(run_dir, device, key)
            models[key] = (model, image_size_of(config, ref.results_file))
        model, image_size = models[key]
        threshold = None if model.decision is None else model.decision.get("pixel_threshold")
        if threshold is None and not written:
            log.warning("%s has no pixel threshold: %s/ is not written (only the maps)", run_dir, SUBMISSION_MASKS)
        for split in sets:
            todo = []
            for image in source._private[category][split]:
                tiff = out / SUBMISSION_MAPS / category / split / f"{image.stem}.tiff"
                png = out / SUBMISSION_MASKS / category / split / f"{image.stem}.png"
                if not (tiff.is_file() and (threshold is None or png.is_file())):
                    todo.append((image, tiff, png))
            for start in range(0, len(todo), batch_size):
                chunk = todo[start : start + batch_size]
                batch = torch.stack([read_image(image, image_size) for image, _, _ in chunk]).to(device)
                with torch.no_grad():
                    maps = model(batch).anomaly_map.float()
                for (image, tiff, png), amap in zip(chunk, maps):
                    width, height = check_image(image)
                    full = torch.nn.functional.interpolate(amap[None, :1], (height, width), mode="bilinear")[0, 0]
                    values = full.cpu().numpy()
                    atomic_replace(tiff, lambda f, v=values: _write_tiff(f, v.astype(np.float16)), binary=True)
                    if threshold is not None:
                        mask = Image.fromarray((values >= threshold).astype(np.uint8) * 255)
                        atomic_replace(png, lambda f, m=mask: m.save(f, format="PNG"), binary=True)
            written[f"{category}/{split}"] = len(todo)
            log.info("%s/%s: %d images written, %d already there", category, split, len(todo),
                     len(source._private[category][split]) - len(todo))  # fmt: skip
    return written


def _write_tiff(handle: Any, values: np.ndarray) -> None:
    import tifffile  # installed with scikit-image; PIL cannot write float16

    buffer = io.BytesIO()  # tifffile wants a named file or a seekable buffer, not a descriptor's handle
    tifffile.imwrite(buffer, values)
    handle.write(buffer.getvalue())


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m adzoo.data.mvtec_ad2 [--submission] <run folder> [<data root>] [<output folder>]``: print the
    ``adzoo-predict`` commands that score every private set with the run or, with ``--submission``, write MVTec AD 2's
    submission folder (anomaly_images/, anomaly_images_thresholded/). The root defaults to ``$MVTEC_AD2_ROOT``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["-h"], ["--help"]):
        print(main.__doc__)
        return 0
    submission = args[:1] == ["--submission"]
    args = args[1:] if submission else args
    if not 1 <= len(args) <= 3:
        print(main.__doc__, file=sys.stderr)
        return 2
    root = args[1] if len(args) > 1 else os.environ.get(ROOT_ENV)
    output = args[2] if len(args) > 2 else None
    try:
        source = MVTecAD2Source(root)
        if submission:
            written = write_submission(source, args[0], output)
            counts = ", ".join(f"{name} {n}" for name, n in written.items())
            print(f"mvtec_ad2: {sum(written.values())} images written to the submission folder ({counts})")
            return 0
        commands = source.predict_commands(args[0], output)
    except (DataError, ConfigError, OSError) as exc:
        print(f"mvtec_ad2: error: {exc}", file=sys.stderr)
        return 2
    if not commands:
        print(f"mvtec_ad2: error: no {' or '.join(PRIVATE_SETS)} images under {source.root}", file=sys.stderr)
        return 2
    print("\n".join(commands))
    return 0


if __name__ == "__main__":
    sys.exit(main())
