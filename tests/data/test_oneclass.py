"""One-class sets: task definitions, the item contract, and the offline file readers on tiny fakes."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adzoo.data.oneclass import (
    CIFAR10_CLASSES,
    CIFAR100_COARSE_CLASSES,
    DIGITS_TEST_FRACTION,
    FASHION_MNIST_CLASSES,
    UNIAD_SPLITS,
    OneClassSource,
    _stratified_pick,
    read_idx,
)

DIGITS_N = 1797  # scikit-learn's bundled digits


@pytest.fixture(scope="module")
def digits() -> OneClassSource:
    return OneClassSource("digits")


# ------------------------------------------------------------------------------------------- protocols


def test_digits_unimodal_has_ten_tasks(digits: OneClassSource) -> None:
    assert digits.categories() == [f"digit_{d}" for d in range(10)]
    assert not any(digits.has_masks(c) for c in digits.categories())


def test_unimodal_train_holds_only_the_normal_class(digits: OneClassSource) -> None:
    train = digits.train_dataset(["digit_3"], image_size=8)
    assert len(train) > 100
    assert set(train.source_classes.tolist()) == {3}
    assert set(train.labels.tolist()) == {0}
    assert set(train.item_categories) == {"digit_3"}


def test_unimodal_test_labels_anomalous_exactly_for_other_classes(digits: OneClassSource) -> None:
    test = digits.test_dataset(["digit_3"], image_size=8)
    classes = test.source_classes
    np.testing.assert_array_equal(test.labels, (classes != 3).astype(np.int64))
    assert set(classes.tolist()) == set(range(10))  # the whole test set
    assert set(test.item_categories) == {"digit_3"}


def test_multimodal_holds_out_one_class() -> None:
    src = OneClassSource("digits", protocol="multimodal")
    assert src.categories() == [f"all_but_digit_{d}" for d in range(10)]
    assert src.normal_classes("all_but_digit_7") == [f"digit_{d}" for d in range(10) if d != 7]
    train = src.train_dataset(["all_but_digit_7"], image_size=8)
    assert set(train.source_classes.tolist()) == set(range(10)) - {7}
    test = src.test_dataset(["all_but_digit_7"], image_size=8)
    np.testing.assert_array_equal(test.labels, (test.source_classes == 7).astype(np.int64))


def test_uniad_split_names_and_normal_sets() -> None:
    assert UNIAD_SPLITS == {
        "uniad_split_01234": (0, 1, 2, 3, 4),
        "uniad_split_56789": (5, 6, 7, 8, 9),
        "uniad_split_02468": (0, 2, 4, 6, 8),
        "uniad_split_13579": (1, 3, 5, 7, 9),
    }
    src = OneClassSource("digits", protocol="uniad")
    assert src.categories() == list(UNIAD_SPLITS)
    test = src.test_dataset(src.categories(), image_size=8)
    categories = np.array(test.item_categories)
    for name, normal in UNIAD_SPLITS.items():
        rows = categories == name
        expected = (~np.isin(test.source_classes[rows], normal)).astype(np.int64)
        np.testing.assert_array_equal(test.labels[rows], expected)
        train = src.train_dataset([name], image_size=8)
        assert set(train.source_classes.tolist()) == set(normal)


def test_multi_task_datasets_are_per_task_unions(digits: OneClassSource) -> None:
    one = digits.test_dataset(["digit_1"], image_size=8)
    both = digits.test_dataset(["digit_1", "digit_2"], image_size=8)
    assert len(both) == 2 * len(one)
    cats = both.item_categories
    assert cats.count("digit_1") == cats.count("digit_2") == len(one)
    train = digits.train_dataset(["digit_1", "digit_2"], image_size=8)
    for item in (train[0], train[len(train) - 1]):
        assert item["label"] == 0
    assert {train[0]["category"], train[len(train) - 1]["category"]} == {"digit_1", "digit_2"}


# ------------------------------------------------------------------------------------------- contract


@pytest.mark.parametrize("size", [8, 5, 32])
def test_items_follow_the_contract(digits: OneClassSource, size: int) -> None:
    test = digits.test_dataset(["digit_0"], image_size=size)
    train = digits.train_dataset(["digit_0"], image_size=size)
    for ds, split in ((test, "test"), (train, "train")):
        for i in (0, 1, len(ds) - 1):
            item = ds[i]
            assert set(item) == {"image", "mask", "label", "category", "path", "has_mask"}
            img, mask = item["image"], item["mask"]
            assert img.shape == (3, size, size)
            assert img.dtype == torch.float32
            assert float(img.min()) >= 0.0
            assert float(img.max()) <= 1.0
            assert torch.equal(img[0], img[1])
            assert torch.equal(img[0], img[2])
            assert mask.shape == (1, size, size)
            assert mask.dtype == torch.float32
            assert not mask.any()
            assert type(item["label"]) is int
            assert item["label"] in (0, 1)
            assert item["category"] == "digit_0"
            assert item["has_mask"] is False
            assert item["path"].startswith(f"digits/{split}/")
            assert len(item["path"].split("/")[-1]) == 5
    assert float(test[0]["image"].max()) > 0.5  # digits' 0..16 range is scaled to [0, 1], not left dark


def test_native_size_keeps_exact_pixels(digits: OneClassSource) -> None:
    img = digits.test_dataset(["digit_0"], image_size=8)[0]["image"]
    np.testing.assert_allclose((img * 255).numpy(), np.rint(img.numpy() * 255), atol=1e-3)


def test_digits_split_is_stratified_and_deterministic(digits: OneClassSource) -> None:
    again = OneClassSource("digits", seed=123)  # the split does not depend on the subsampling seed
    a = digits.test_dataset(["digit_0"], image_size=8)
    b = again.test_dataset(["digit_0"], image_size=8)
    np.testing.assert_array_equal(a.source_classes, b.source_classes)
    assert [a[i]["path"] for i in range(0, len(a), 37)] == [b[i]["path"] for i in range(0, len(b), 37)]
    assert torch.equal(a[17]["image"], b[17]["image"])
    train_counts = np.bincount(digits.train_dataset(digits.categories(), 8).source_classes, minlength=10)
    test_counts = np.bincount(a.source_classes, minlength=10)
    assert train_counts.sum() + test_counts.sum() == DIGITS_N
    frac = test_counts / (train_counts + test_counts)
    assert np.all(np.abs(frac - DIGITS_TEST_FRACTION) < 0.01)


# ----------------------------------------------------------------------------------------- subsampling


def test_subsampling_keeps_both_labels_and_is_deterministic() -> None:
    kwargs = {"protocol": "unimodal", "max_train_per_task": 7, "max_test_per_task": 10}
    src = OneClassSource("digits", **kwargs)
    test = src.test_dataset(src.categories(), image_size=8)
    assert len(test) == 100
    categories = np.array(test.item_categories)
    for name in src.categories():
        assert set(test.labels[categories == name].tolist()) == {0, 1}
    assert len(src.train_dataset(["digit_5"], image_size=8)) == 7

    same = OneClassSource("digits", **kwargs)
    np.testing.assert_array_equal(test.labels, same.test_dataset(same.categories(), 8).labels)
    paths = [test[i]["path"] for i in range(len(test))]
    assert paths == [same.test_dataset(same.categories(), 8)[i]["path"] for i in range(len(test))]
    # a task's subsample does not depend on which other tasks are selected
    alone = OneClassSource("digits", categories=["digit_4"], **kwargs).test_dataset(["digit_4"], 8)
    assert [alone[i]["path"] for i in range(len(alone))] == [
        p for p, c in zip(paths, categories, strict=True) if c == "digit_4"
    ]
    other_seed = OneClassSource("digits", seed=1, **kwargs).test_dataset(src.categories(), 8)
    assert [other_seed[i]["path"] for i in range(len(other_seed))] != paths


def test_multimodal_train_subsample_is_stratified_by_class() -> None:
    src = OneClassSource("digits", protocol="multimodal", max_train_per_task=18)
    train = src.train_dataset(["all_but_digit_0"], image_size=8)
    assert np.bincount(train.source_classes, minlength=10).tolist() == [0] + [2] * 9


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=6),
    n=st.integers(min_value=1, max_value=120),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_stratified_pick_properties(counts: list[int], n: int, seed: int) -> None:
    strata = np.repeat(np.arange(len(counts)), counts)
    picked = _stratified_pick(strata, n, np.random.default_rng(seed))
    assert len(picked) == min(n, len(strata))
    assert len(np.unique(picked)) == len(picked)
    if n >= len(counts):
        assert set(strata[picked].tolist()) == set(range(len(counts)))
    again = _stratified_pick(strata, n, np.random.default_rng(seed))
    np.testing.assert_array_equal(picked, again)


# ------------------------------------------------------------------------------ fashion-mnist idx files


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def _write_fake_fashion(folder: Path, gz: bool, rng: np.random.Generator) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(40, 6, 6), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(40, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, size=(20, 6, 6), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(20, dtype=np.uint8) % 10,
    }
    for name, array in data.items():
        if gz:
            with gzip.open(folder / f"{name}.gz", "wb") as fh:
                fh.write(_idx_bytes(array))
        else:
            (folder / name).write_bytes(_idx_bytes(array))
    return data


def test_read_idx_round_trip_and_bad_magic(tmp_path: Path) -> None:
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a-idx3-ubyte").write_bytes(_idx_bytes(array))
    np.testing.assert_array_equal(read_idx(tmp_path / "a-idx3-ubyte"), array)
    with gzip.open(tmp_path / "a-idx3-ubyte.gz", "wb") as fh:
        fh.write(_idx_bytes(array))
    np.testing.assert_array_equal(read_idx(tmp_path / "a-idx3-ubyte.gz"), array)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04" + bytes(8))
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(_idx_bytes(array)[:-1])
    with pytest.raises(ValueError, match="data bytes"):
        read_idx(tmp_path / "short")


@pytest.mark.parametrize(("layout", "gz"), [("flat", True), ("torchvision", False)])
def test_fashion_mnist_from_idx_files(tmp_path: Path, layout: str, gz: bool) -> None:
    folder = tmp_path if layout == "flat" else tmp_path / "FashionMNIST" / "raw"
    data = _write_fake_fashion(folder, gz, np.random.default_rng(0))
    src = OneClassSource("fashion_mnist", root=str(tmp_path))
    assert src.categories() == list(FASHION_MNIST_CLASSES)
    assert "t_shirt_top" in src.categories()
    assert "ankle_boot" in src.categories()
    train = src.train_dataset(["sneaker"], image_size=6)
    np.testing.assert_array_equal(train.source_classes, [7] * 4)
    item = train[1]
    expected = data["train-images-idx3-ubyte"][17].astype(np.float32) / 255.0  # second 7 is row 17
    np.testing.assert_allclose(item["image"][2].numpy(), expected, atol=1e-6)
    assert item["path"] == "fashion_mnist/train/00017"
    test = src.test_dataset(["sneaker"], image_size=4)
    assert len(test) == 20
    assert test.labels.sum() == 18
    assert test[0]["image"].shape == (3, 4, 4)


def test_fashion_mnist_missing_files_name_the_root(tmp_path: Path) -> None:
    _write_fake_fashion(tmp_path, True, np.random.default_rng(0))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte") as err:
        OneClassSource("fashion_mnist", root=str(tmp_path))
    assert str(tmp_path) in str(err.value)
    assert "download" in str(err.value)


# ------------------------------------------------------------------------------------ cifar pickles


def _write_pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh)


def _fake_cifar10(root: Path, per_batch: int = 10) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        _write_pickle(folder / name, {"data": data, "labels": list(np.arange(per_batch) % 10)})


def test_cifar10_from_pickles_with_uniad_splits(tmp_path: Path) -> None:
    _fake_cifar10(tmp_path)
    src = OneClassSource("cifar10", root=str(tmp_path))
    assert src.categories() == list(CIFAR10_CLASSES)
    assert len(src.train_dataset(["airplane"], 32)) == 5
    item = src.test_dataset(["airplane"], 16)[3]
    assert item["image"].shape == (3, 16, 16)
    assert item["label"] == 1
    assert item["category"] == "airplane"
    assert not torch.equal(item["image"][0], item["image"][1])  # real colour, not replicated

    uniad = OneClassSource("cifar10", root=str(tmp_path / "cifar-10-batches-py"), protocol="uniad")
    test = uniad.test_dataset(["uniad_split_02468"], 32)
    assert len(test) == 10
    np.testing.assert_array_equal(test.labels, np.arange(10) % 2)
    assert uniad.normal_classes("uniad_split_02468") == ["airplane", "bird", "deer", "frog", "ship"]


def test_cifar100_uses_coarse_labels(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for name, n in (("train", 40), ("test", 20)):
        coarse = list(np.arange(n) % 20)
        fine = list((np.arange(n) * 7) % 100)
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        _write_pickle(folder / name, {"data": data, "fine_labels": fine, "coarse_labels": coarse})
    src = OneClassSource("cifar100", root=str(tmp_path), protocol="multimodal")
    assert len(src.categories()) == 20
    assert src.categories()[0] == "all_but_aquatic_mammals"
    assert len(CIFAR100_COARSE_CLASSES) == 20
    train = src.train_dataset(["all_but_people"], 8)
    assert len(train) == 38
    assert 14 not in set(train.source_classes.tolist())
    test = src.test_dataset(["all_but_people"], 8)
    np.testing.assert_array_equal(test.labels, (test.source_classes == 14).astype(np.int64))
    with pytest.raises(ValueError, match="10-class"):
        OneClassSource("cifar100", root=str(tmp_path), protocol="uniad")


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_missing_cifar_root_raises_file_not_found(tmp_path: Path, name: str) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as err:
        OneClassSource(name, root=str(root))
    message = str(err.value)
    assert str(root) in message
    assert "download" in message
    assert ("test_batch" if name == "cifar10" else "cifar-100-python") in message
    with pytest.raises(FileNotFoundError, match="no root was given"):
        OneClassSource(name)


# --------------------------------------------------------------------------------------------- errors


def test_unknown_names_list_the_choices(digits: OneClassSource) -> None:
    with pytest.raises(ValueError, match="digits, fashion_mnist, cifar10, cifar100"):
        OneClassSource("mnist")
    with pytest.raises(ValueError, match="unimodal, multimodal, uniad"):
        OneClassSource("digits", protocol="bimodal")
    with pytest.raises(ValueError, match="digit_0, digit_1"):
        OneClassSource("digits", categories=["digit_11"])
    with pytest.raises(ValueError, match="all_but_digit_0"):
        OneClassSource("digits", protocol="multimodal", categories="digit_1")
    with pytest.raises(ValueError, match="valid choices"):
        digits.train_dataset(["airplane"], 8)
    with pytest.raises(ValueError, match="valid choices"):
        digits.has_masks("nope")
    with pytest.raises(ValueError, match="max_test_per_task"):
        OneClassSource("digits", max_test_per_task=0)
    with pytest.raises(ValueError, match="image_size"):
        digits.test_dataset(["digit_0"], 0)


def test_single_category_string_selects_one_task() -> None:
    src = OneClassSource("digits", categories="digit_2")
    assert src.categories() == ["digit_2"]
