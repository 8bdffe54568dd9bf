"""Pixel-metric accumulators: exact == functional, streaming ~= exact, merging, range growth, devices."""

from __future__ import annotations

import math
import pickle

import pytest
import torch

from adzoo.metrics import (
    PIXEL_METRIC_KEYS,
    ExactPixelMetrics,
    PixelMetrics,
    StreamingPixelMetrics,
    make_pixel_metrics,
    pixel_metrics,
)
from adzoo.metrics.pixel import _dyadic_grid

from ._synth import blob_masks, smooth_maps


def _feed(metric: PixelMetrics, maps: torch.Tensor, masks: torch.Tensor, batch: int = 8) -> PixelMetrics:
    for i in range(0, len(maps), batch):
        metric.update(maps[i : i + batch], masks[i : i + batch])
    return metric


def _assert_close(a: dict[str, float], b: dict[str, float], tol: float) -> None:
    assert set(a) == set(b) == set(PIXEL_METRIC_KEYS)
    for key in PIXEL_METRIC_KEYS:
        assert a[key] == pytest.approx(b[key], abs=tol), key


@pytest.fixture(scope="module", params=[0.0, 1.0], ids=["noise", "signal"])
def data(request: pytest.FixtureRequest) -> tuple[torch.Tensor, torch.Tensor]:
    masks = blob_masks(50, 64, 64, seed=0)
    return smooth_maps(50, 64, 64, seed=0, masks=masks, signal=request.param), masks


def test_backends_satisfy_protocol() -> None:
    assert isinstance(ExactPixelMetrics(), PixelMetrics)
    assert isinstance(StreamingPixelMetrics(), PixelMetrics)


def test_factory() -> None:
    assert isinstance(make_pixel_metrics("exact", fpr_limit=0.1), ExactPixelMetrics)
    streaming = make_pixel_metrics("streaming", bins=128)
    assert isinstance(streaming, StreamingPixelMetrics)
    assert streaming.describe()["bins"] == 128
    with pytest.raises(ValueError, match=r"'exact', 'streaming'"):
        make_pixel_metrics("approximate")


def test_exact_accumulator_equals_functional(data: tuple[torch.Tensor, torch.Tensor]) -> None:
    maps, masks = data
    got = _feed(ExactPixelMetrics(), maps, masks).compute()
    _assert_close(got, pixel_metrics(maps, masks), 1e-12)


def test_streaming_agrees_with_exact(data: tuple[torch.Tensor, torch.Tensor]) -> None:
    maps, masks = data
    exact = _feed(ExactPixelMetrics(), maps, masks).compute()
    streaming = _feed(StreamingPixelMetrics(), maps, masks).compute()
    _assert_close(streaming, exact, 1e-3)


def test_streaming_is_exact_when_every_value_has_its_own_bin() -> None:
    masks = blob_masks(12, 24, 24, seed=4, level=1.0)
    g = torch.Generator().manual_seed(4)
    maps = torch.randint(0, 50, (12, 24, 24), generator=g).float() + 20 * masks.float()
    exact = _feed(ExactPixelMetrics(), maps, masks, batch=5).compute()
    streaming = _feed(StreamingPixelMetrics(bins=256), maps, masks, batch=5).compute()
    _assert_close(streaming, exact, 1e-12)


@pytest.mark.parametrize("backend", ["exact", "streaming"])
def test_merge_of_halves_equals_one_pass(backend: str, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    maps, masks = data
    maps = maps.clone()
    maps[30:] *= 3  # the second half widens the range: the grids of the halves differ
    whole = _feed(make_pixel_metrics(backend), maps, masks)
    first = _feed(make_pixel_metrics(backend), maps[:25], masks[:25])
    second = _feed(make_pixel_metrics(backend), maps[25:], masks[25:])
    state = pickle.loads(pickle.dumps(second.state()))  # what a DDP gather would carry
    first.merge(state)
    _assert_close(first.compute(), whole.compute(), 1e-12)
    if backend == "streaming":  # the merged histograms are the one-pass histograms
        a, b = first.state(), whole.state()
        assert (a["e"], a["q"]) == (b["e"], b["q"])
        assert torch.equal(a["neg"], b["neg"])
        assert torch.equal(a["pos"], b["pos"])
        torch.testing.assert_close(a["overlap"], b["overlap"], rtol=1e-12, atol=0)


@pytest.mark.parametrize("backend", ["exact", "streaming"])
def test_merge_into_empty_and_of_empty(backend: str, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    maps, masks = data
    full = _feed(make_pixel_metrics(backend), maps, masks)
    empty = make_pixel_metrics(backend)
    empty.merge(full.state())
    empty.merge(make_pixel_metrics(backend).state())
    _assert_close(empty.compute(), full.compute(), 1e-12)


def test_streaming_out_of_range_later_batch() -> None:
    masks = blob_masks(24, 32, 32, seed=9, level=1.0)
    maps = smooth_maps(24, 32, 32, seed=9, masks=masks, signal=1.0)
    maps[8:16] = maps[8:16] * 3 - 2  # outside the first batches' range, on both sides
    maps[16:] = maps[16:] * 10 + 1  # and again
    streaming = _feed(StreamingPixelMetrics(), maps, masks)
    exact = _feed(ExactPixelMetrics(), maps, masks)
    info = streaming.describe()
    lo, hi = info["range"]
    assert lo <= float(maps.min()) == info["score_min"]
    assert hi > float(maps.max()) == info["score_max"]
    assert info["bins_spanned"] > info["bins"] // 2
    assert info["n_pixels"] == maps.numel()
    _assert_close(streaming.compute(), exact.compute(), 1e-3)


def test_dyadic_grid_is_minimal_and_covers() -> None:
    for lo, hi, bins in [(0.0, 1.0, 4096), (-3.2, 7.9, 100), (1e6, 1e6 + 1, 4096), (5.0, 5.0, 16), (0.0, 0.0, 2)]:
        e, q = _dyadic_grid(lo, hi, bins)
        assert q == math.floor(math.ldexp(lo, -e))
        assert math.floor(math.ldexp(hi, -e)) - q < bins  # covers
        if hi > lo:  # and a finer grid would not
            assert math.floor(math.ldexp(hi, -e + 1)) - math.floor(math.ldexp(lo, -e + 1)) >= bins


def test_bin_edges_are_exact() -> None:
    metric = StreamingPixelMetrics(bins=8)
    metric.update(torch.tensor([[[0.0, 0.5, 1.0, 3.0]]]), torch.zeros(1, 1, 4))
    assert metric.describe()["bin_width"] == 0.5
    assert metric.state()["neg"].tolist() == [1, 1, 1, 0, 0, 0, 1, 0]  # an edge value goes up


def test_huge_scores_still_separate() -> None:
    masks = torch.zeros(4, 8, 8, dtype=torch.bool)
    masks[:, 2:4, 2:5] = True
    maps = torch.full((4, 8, 8), 1e6, dtype=torch.float32) + masks.float()  # 1e6 vs 1e6 + 1
    for backend in ("exact", "streaming"):
        out = make_pixel_metrics(backend)
        out.update(maps[:2], masks[:2])
        out.update(torch.full((2, 8, 8), 1e6) + masks[2:].float(), masks[2:])
        _assert_close(out.compute(), dict.fromkeys(PIXEL_METRIC_KEYS, 1.0), 1e-12)


@pytest.mark.parametrize("backend", ["exact", "streaming"])
def test_reset_and_nan_cases(backend: str) -> None:
    metric = make_pixel_metrics(backend)
    assert all(math.isnan(v) for v in metric.compute().values())
    metric.update(torch.rand(2, 8, 8), torch.zeros(2, 8, 8))  # no anomalous pixel anywhere
    assert all(math.isnan(v) for v in metric.compute().values())
    metric.update(torch.rand(2, 8, 8) + 5, torch.ones(2, 8, 8))
    assert metric.compute()["pixel_auroc"] == 1.0
    metric.reset()
    assert all(math.isnan(v) for v in metric.compute().values())
    assert metric.describe()["n_pixels"] == 0


def test_state_is_cpu_and_picklable() -> None:
    masks = blob_masks(4, 16, 16, seed=2, level=1.0)
    maps = smooth_maps(4, 16, 16, seed=2, masks=masks, signal=1.0)
    for backend in ("exact", "streaming"):
        state = _feed(make_pixel_metrics(backend), maps, masks).state()
        assert all(v.device.type == "cpu" for v in state.values() if isinstance(v, torch.Tensor))
        pickle.dumps(state)
    with pytest.raises(ValueError, match="merge"):
        ExactPixelMetrics().merge(StreamingPixelMetrics().state())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    from adzoo.metrics import aupro, binary_metrics

    masks = blob_masks(20, 48, 48, seed=11)
    maps = smooth_maps(20, 48, 48, seed=11, masks=masks, signal=1.0)
    cpu = {b: _feed(make_pixel_metrics(b), maps, masks).compute() for b in ("exact", "streaming")}
    gpu_metrics = {b: _feed(make_pixel_metrics(b), maps.cuda(), masks.cuda()) for b in ("exact", "streaming")}
    for backend, metric in gpu_metrics.items():
        assert metric.state()["neg"].device.type == "cpu"
        _assert_close(metric.compute(), cpu[backend], 1e-9)
    assert aupro(maps.cuda(), masks.cuda()) == pytest.approx(aupro(maps, masks), abs=1e-9)
    got = binary_metrics(maps.cuda(), masks.cuda())
    for key, value in binary_metrics(maps, masks).items():
        assert got[key] == pytest.approx(value, abs=1e-9)
    with pytest.raises(ValueError, match="NaN"):
        binary_metrics(torch.tensor([0.0, float("nan")], device="cuda"), torch.tensor([0, 1]))
