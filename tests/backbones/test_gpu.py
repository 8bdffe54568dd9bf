"""Device handling on CUDA: features come back on the images' device, cache or not."""

from __future__ import annotations

import pytest
import torch

from adzoo.backbones import FeatureCache, FeatureExtractor

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize(("name", "taps"), [("test_efficientnet", (0, 1, 2, 3)), ("test_vit", (1, 3, 5))])
def test_extractor_and_cache_on_cuda(name: str, taps: tuple[int, ...]) -> None:
    ext = FeatureExtractor(name, out_indices=taps, weights="none").cuda()
    imgs = torch.rand(5, 3, 64, 96, device="cuda")
    direct = ext(imgs)
    for f, c, s in zip(direct, ext.channels, ext.strides, strict=True):
        assert f.is_cuda
        assert f.shape == (5, c, 64 // s, 96 // s)

    cache = FeatureCache(ext)
    first = cache(imgs)
    second = cache(imgs)
    for a, b, d in zip(first, second, direct, strict=True):
        assert a.is_cuda
        assert b.is_cuda
        torch.testing.assert_close(a, d)
        assert torch.equal(a, b)
    assert (cache.hits, cache.misses) == (5, 5)
    # CPU images against a CUDA extractor: computed on the GPU, returned on the CPU.
    out = cache(imgs.cpu())
    assert (cache.hits, cache.misses) == (10, 5)  # same pixels, same content keys
    assert not out[0].is_cuda
    torch.testing.assert_close(out[0], direct[0].cpu())
