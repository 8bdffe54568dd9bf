"""Image metrics and the avg-pool-max image score."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from adzoo.metrics import avgpool_max_score, image_metrics


def test_image_metrics_keys_and_values() -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1] * 20)
    scores = torch.randn(40, generator=g) + labels
    out = image_metrics(scores, labels)
    assert set(out) == {"image_auroc", "image_ap", "image_f1max"}
    assert out["image_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert out["image_ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert 0 < out["image_f1max"] <= 1


def test_image_metrics_single_class_is_nan() -> None:
    out = image_metrics(torch.rand(5), torch.zeros(5))
    assert all(math.isnan(v) for v in out.values())


def _avgpool_max_loop(m: torch.Tensor, k: int) -> float:
    h, w = m.shape
    kh, kw = min(k, h), min(k, w)
    return max(m[i : i + kh, j : j + kw].double().mean().item() for i in range(h - kh + 1) for j in range(w - kw + 1))


@pytest.mark.parametrize(("shape", "kernel"), [((3, 20, 24), 16), ((2, 1, 10, 12), 4), ((2, 8, 30), 16)])
def test_avgpool_max_score(shape: tuple[int, ...], kernel: int) -> None:
    maps = torch.rand(*shape, generator=torch.Generator().manual_seed(1))
    got = avgpool_max_score(maps, kernel)
    flat = maps.reshape(-1, *shape[-2:])
    assert got.shape == (shape[0],)
    expected = torch.tensor([_avgpool_max_loop(m, kernel) for m in flat], dtype=torch.float64)
    # float32 pooling against a float64 loop: a float32 mean of n values, summed in any order (the kernel's SIMD
    # layout differs between CPUs), errs by at most (n + 2)·2⁻²⁴·max|x|, and a max moves no more than its inputs.
    window = min(kernel, shape[-2]) * min(kernel, shape[-1])
    tol = (window + 2) * 2.0**-24 * float(maps.abs().max())
    torch.testing.assert_close(got.double(), expected, atol=tol, rtol=0)


def test_avgpool_max_small_map_uses_whole_map() -> None:
    maps = torch.arange(12.0).reshape(1, 3, 4)
    assert avgpool_max_score(maps, kernel=16).item() == pytest.approx(maps.mean().item())


def test_avgpool_max_keeps_raw_scale() -> None:
    maps = torch.full((1, 4, 4), 1e6, dtype=torch.float64)
    maps[0, 0, 0] += 16.0
    assert avgpool_max_score(maps, kernel=4).item() == 1e6 + 1.0
