"""FeatureCache: same features as the backbone, misses computed once, disk files verified."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adzoo.backbones import FeatureCache, FeatureExtractor, content_keys


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    return FeatureExtractor("tf_efficientnet_lite0", out_indices=(0, 1, 2, 3), weights="packaged")


def _images(n: int, seed: int = 0, size: int = 64) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _assert_same(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.shape == y.shape
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-4)


def test_cache_matches_direct_call_and_counts(extractor: FeatureExtractor) -> None:
    cache = FeatureCache(extractor)
    imgs = _images(6)
    direct = extractor(imgs)
    first = cache(imgs)
    for x, y in zip(first, direct, strict=True):
        assert torch.equal(x, y)  # same batch, same call: bit-identical
    assert (cache.hits, cache.misses) == (0, 6)
    second = cache(imgs)
    for x, y in zip(second, direct, strict=True):
        assert torch.equal(x, y)
    assert (cache.hits, cache.misses) == (6, 6)


def test_partial_miss_only_computes_misses(extractor: FeatureExtractor, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = FeatureCache(extractor)
    imgs = _images(6, seed=1)
    cache(imgs[:4])
    batch_sizes: list[int] = []
    original = type(extractor).forward

    def spy(self: FeatureExtractor, images: torch.Tensor) -> list[torch.Tensor]:
        batch_sizes.append(images.shape[0])
        return original(self, images)

    monkeypatch.setattr(type(extractor), "forward", spy)
    # order shuffled and a duplicate: results must follow batch order, the duplicate computed once
    order = [5, 0, 4, 2, 5, 1]
    out = cache(imgs[order])
    assert batch_sizes == [2]  # one backbone call for the two distinct misses
    _assert_same(out, original(extractor, imgs[order]))
    assert cache.misses == 4 + 2


def test_explicit_keys_and_content_keys(extractor: FeatureExtractor) -> None:
    imgs = _images(3, seed=2)
    keys = content_keys(imgs)
    assert len(set(keys)) == 3
    assert keys == content_keys(imgs.clone())
    cache = FeatureCache(extractor)
    cache(imgs, keys=["a", "b", "c"])
    out = cache(torch.zeros_like(imgs), keys=["a", "b", "c"])  # keys win: caller vouches for them
    _assert_same(out, extractor(imgs))
    assert cache.hits == 3
    with pytest.raises(ValueError, match="keys"):
        cache(imgs, keys=["a"])


def test_same_key_other_size_is_a_miss(extractor: FeatureExtractor) -> None:
    cache = FeatureCache(extractor)
    cache(_images(2, size=64), keys=["x", "y"])
    out = cache(_images(2, size=32), keys=["x", "y"])
    assert out[0].shape[-1] == 16
    assert cache.misses == 4


def test_max_items_bounds_memory(extractor: FeatureExtractor) -> None:
    cache = FeatureCache(extractor, max_items=3)
    cache(_images(5, seed=3))
    assert len(cache) == 3


def test_refuses_unfrozen() -> None:
    ext = FeatureExtractor("test_efficientnet", out_indices=(0,), weights="none", frozen=False)
    with pytest.raises(ValueError, match="frozen"):
        FeatureCache(ext)
    frozen = FeatureExtractor("test_efficientnet", out_indices=(0,), weights="none")
    cache = FeatureCache(frozen)
    frozen.model.conv_stem.weight.requires_grad_(True)
    with pytest.raises(ValueError, match="frozen"):
        cache(_images(1))


def test_disk_round_trip(extractor: FeatureExtractor, tmp_path: Path) -> None:
    imgs = _images(4, seed=4)
    writer = FeatureCache(extractor, disk_dir=tmp_path)
    expected = writer(imgs)
    files = list(tmp_path.rglob("*.pt"))
    assert len(files) == 4
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temp files behind
    reader = FeatureCache(extractor, disk_dir=tmp_path)  # a new run: empty memory
    out = reader(imgs)
    for x, y in zip(out, expected, strict=True):
        assert torch.equal(x, y)
    assert reader.stats == {"hits": 4, "disk_hits": 4, "misses": 0, "corrupted": 0, "in_memory": 4}


def test_disk_folder_depends_on_weights(tmp_path: Path) -> None:
    """Two random inits share an identity() but must not share disk features."""
    a = FeatureExtractor("test_efficientnet", out_indices=(0,), weights="none")
    b = FeatureExtractor("test_efficientnet", out_indices=(0,), weights="none")
    assert a.identity() == b.identity()
    assert a.weights_fingerprint() != b.weights_fingerprint()
    imgs = _images(2, seed=5)
    FeatureCache(a, disk_dir=tmp_path)(imgs)
    cache_b = FeatureCache(b, disk_dir=tmp_path)
    _assert_same(cache_b(imgs), b(imgs))
    assert cache_b.disk_hits == 0


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_corrupted_disk_file_is_recomputed(extractor: FeatureExtractor, tmp_path: Path, damage: str) -> None:
    imgs = _images(3, seed=6)
    expected = FeatureCache(extractor, disk_dir=tmp_path)(imgs)
    victim = sorted(tmp_path.rglob("*.pt"))[0]
    raw = bytearray(victim.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "flip":
        # Flip bytes inside the largest tensor's data, so the zip still loads but the values change.
        mid = len(raw) // 2
        raw[mid : mid + 8] = bytes(b ^ 0xFF for b in raw[mid : mid + 8])
    else:
        raw = bytearray(b"not a torch file")
    victim.write_bytes(bytes(raw))

    cache = FeatureCache(extractor, disk_dir=tmp_path)
    # the damaged image is recomputed alone: batch size 1 vs 3 may change the last float bits
    _assert_same(cache(imgs), expected)
    assert cache.stats == {"hits": 2, "disk_hits": 2, "misses": 1, "corrupted": 1, "in_memory": 3}
    # the recomputed file was rewritten and is good again
    again = FeatureCache(extractor, disk_dir=tmp_path)
    again(imgs)
    assert again.stats["disk_hits"] == 3
    assert again.corrupted == 0
