"""Random MVTec-layout trees, good and broken: each loads correctly or fails naming the path and the expectation.

No bare traceback from deep inside PIL or torch: every failure is a DataError whose message contains the
offending path (or the root), so a user can fix their data.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from adzoo.data.mvtec import DataError, MVTecLayoutSource

MODES = ("RGB", "L", "RGBA", "I;16", "P")
FAULTS = (
    "none", "missing_train", "missing_test", "empty_train", "missing_mask", "mask_wrong_size",
    "non_image_file", "unreadable_image", "truncated_image", "empty_file", "unreadable_mask", "no_ground_truth",
)  # fmt: skip
NAMES = ("000", "img 1", "ünï-çødé", "a.b.c", "UPPER")


def _write_image(path: Path, mode: str, size: tuple[int, int], rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = size
    if mode == "RGB":
        img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    elif mode == "L":
        img = Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8))
    elif mode == "RGBA":
        img = Image.fromarray(rng.integers(0, 255, (h, w, 4), dtype=np.uint8), mode="RGBA")
    elif mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, (h, w), dtype=np.uint16))
    else:
        img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).convert("P")
    img.save(path)


def _build(root: Path, fault: str, mode: str, name: str, size: tuple[int, int], seed: int) -> Path | None:
    """Write a one-category tree with one fault; return the path the error must name (None if valid)."""
    rng = np.random.default_rng(seed)
    base = root / "part"
    for i in range(2):
        _write_image(base / "train" / "good" / f"{name}{i}.png", mode, size, rng)
    _write_image(base / "test" / "good" / f"{name}.png", mode, size, rng)
    defect = base / "test" / "dent" / f"{name}.png"
    _write_image(defect, mode, size, rng)
    mask = base / "ground_truth" / "dent" / f"{name}_mask.png"
    mask.parent.mkdir(parents=True, exist_ok=True)
    values = np.zeros(size, dtype=np.uint8)
    values[: size[0] // 2, : size[1] // 2] = 255
    Image.fromarray(values).save(mask)
    if fault == "missing_train":
        shutil.rmtree(base / "train")
        return root  # no category left: the root is named
    if fault == "missing_test":
        shutil.rmtree(base / "test")
        return base / "test"
    if fault == "empty_train":
        for p in (base / "train" / "good").iterdir():
            p.unlink()
        return base / "train" / "good"
    if fault == "missing_mask":
        mask.unlink()
        return mask
    if fault == "mask_wrong_size":
        Image.fromarray(np.zeros((size[0] + 3, size[1]), dtype=np.uint8)).save(mask)
        return mask
    if fault == "non_image_file":
        (base / "train" / "good" / "notes.txt").write_text("not an image")
        return None  # ignored: not an image extension
    if fault == "unreadable_image":
        defect.write_bytes(b"\x89PNG but not really")
        return defect
    if fault == "truncated_image":
        data = defect.read_bytes()
        defect.write_bytes(data[: max(20, len(data) // 3)])
        return defect
    if fault == "empty_file":
        target = base / "train" / "good" / f"{name}0.png"
        target.write_bytes(b"")
        return target
    if fault == "unreadable_mask":
        mask.write_bytes(b"garbage")
        return mask
    if fault == "no_ground_truth":
        shutil.rmtree(base / "ground_truth")
        return None  # image-label-only: valid, pixel metrics skipped
    return None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fault=st.sampled_from(FAULTS),
    mode=st.sampled_from(MODES),
    name=st.sampled_from(NAMES),
    size=st.tuples(st.integers(4, 24), st.integers(4, 24)),
    image_size=st.integers(4, 16),
    seed=st.integers(0, 10_000),
)
def test_random_trees_load_or_fail_with_a_named_path(fault, mode, name, size, image_size, seed) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        expected = _build(root, fault, mode, name, size, seed)
        error: DataError | None = None
        try:
            source = MVTecLayoutSource(root)
            category = source.categories()[0]
            for dataset in (source.train_dataset([category], image_size), source.test_dataset([category], image_size)):
                for i in range(len(dataset)):
                    item = dataset[i]
                    assert item["image"].shape == (3, image_size, image_size)
                    assert 0.0 <= float(item["image"].min()) <= float(item["image"].max()) <= 1.0
                    assert item["mask"].shape == (1, image_size, image_size)
        except DataError as exc:
            error = exc
        if error is not None:
            assert expected is not None, f"valid tree refused: {error}"
            assert str(expected) in str(error), f"error does not name {expected}: {error}"
        else:
            assert expected is None, f"broken tree ({fault}) loaded without error"
            if fault == "no_ground_truth":
                assert not source.has_masks(category)
