"""Float32 islands under mixed precision: losses, densities and metric inputs stay float32 under autocast."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import pytorch_lightning as pl
import torch

from adzoo.models.components import full_precision, gaussian_blur, image_score, mse_loss, residual, upsample_map
from adzoo.models.components.gaussian import GaussianDensity, PCAWhitening

BF16 = {"device_type": "cpu", "dtype": torch.bfloat16}


@full_precision
def _matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a @ b


def test_full_precision_turns_autocast_off_and_casts_inputs_to_float32() -> None:
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    with torch.autocast(**BF16):
        assert (a @ b).dtype == torch.bfloat16  # what autocast would do
        inside = _matmul(a.bfloat16(), b)
    assert inside.dtype == torch.float32
    torch.testing.assert_close(inside, a.bfloat16().float() @ b, rtol=0, atol=0)
    with torch.autocast(**BF16):
        assert _matmul([a, b][0].double(), b.double()).dtype == torch.float64  # float64 is left alone


def test_full_precision_is_the_identity_without_autocast() -> None:
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    torch.testing.assert_close(_matmul(a, b), a @ b, rtol=0, atol=0)
    features, rebuilt = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    assert torch.equal(residual(features, rebuilt), features - rebuilt)
    assert torch.equal(mse_loss(rebuilt, features), torch.nn.functional.mse_loss(rebuilt, features))


def test_maps_scores_and_losses_are_float32_from_16_bit_inputs() -> None:
    scores = torch.rand(2, 4, 4).bfloat16()
    with torch.autocast(**BF16):
        anomaly_map = gaussian_blur(upsample_map(scores, (32, 32)), sigma=2.0)
        assert anomaly_map.dtype == torch.float32
        assert image_score(anomaly_map, "max", 8).dtype == torch.float32
        assert mse_loss(scores, scores.flip(0)).dtype == torch.float32
    # Two scores 0.1 % apart tie in bf16 (8 significant bits) and stay apart here.
    close = torch.tensor([[[[1.000, 1.001]]]])
    with torch.autocast(**BF16):
        blurred = upsample_map(close, (1, 2))
    assert blurred[..., 0] < blurred[..., 1]


@pytest.mark.parametrize("name", ["distance_map", "residual"])
def test_reconstruction_errors_of_16_bit_features_are_taken_in_float32(name: str) -> None:
    """Under autocast the backbone's features and the transformer's output are bf16; squaring and summing their
    difference over 64 channels in bf16 would keep 8 significant bits of the score."""
    from adzoo.models.components import reconstruction
    from adzoo.models.components.precision import residual as float32_residual

    fn = {"distance_map": reconstruction.distance_map, "residual": float32_residual}[name]
    torch.manual_seed(0)
    features = torch.randn(2, 64, 4, 4).bfloat16()
    rebuilt = (features.float() + 0.1 * torch.randn(2, 64, 4, 4)).bfloat16()
    with torch.autocast(**BF16):
        mixed = fn(features, rebuilt)
    reference = fn(features.float(), rebuilt.float())
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, reference, rtol=0, atol=0)
    if name == "distance_map":  # what the island prevents
        assert not torch.equal(fn.__wrapped__(features, rebuilt).float(), reference)


def test_pca_and_gaussian_fit_and_score_in_full_precision_under_autocast() -> None:
    """Transformaly fits its densities inside the precision plugin's autocast: the projection must not be bf16
    there while it is float32 at scoring time."""
    torch.manual_seed(0)
    x = torch.randn(64, 12) @ torch.randn(12, 12)
    pca = PCAWhitening(variance=0.95).fit(x)
    eager = pca(x)
    with torch.autocast(**BF16):
        projected = pca(x)
        density = GaussianDensity().fit(projected)
        log_p = density(projected)
    assert projected.dtype == torch.float32 and log_p.dtype == torch.float32
    torch.testing.assert_close(projected, eager, rtol=0, atol=0)
    torch.testing.assert_close(log_p, density(eager), rtol=0, atol=0)


class DtypeProbe(pl.Callback):
    """Records the dtypes of the training loss and of what the metric callback receives."""

    seen: ClassVar[dict[str, set[torch.dtype]]] = {}

    def on_train_batch_end(self, trainer: pl.Trainer, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs  # fit-once methods have none
        if loss is not None:
            self.seen.setdefault("loss", set()).add(loss.dtype)

    def on_test_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        assert trainer.precision == "bf16-mixed"
        self.seen.setdefault("anomaly_map", set()).add(outputs["anomaly_map"].dtype)
        self.seen.setdefault("pred_score", set()).add(outputs["pred_score"].dtype)


@pytest.mark.parametrize("method", ["uniad", "adtr", "cap", "transformaly", "patchcore"])
def test_a_bf16_mixed_run_hands_float32_losses_and_maps_on(method: str, compose_cfg) -> None:
    from adzoo.engine import run
    from tests.conftest import TINY_DATA, TINY_METHOD

    DtypeProbe.seen = {}
    cfg = compose_cfg(
        f"method={method}",
        *TINY_DATA,
        *TINY_METHOD[method],
        "data.categories=[pill]",
        "trainer.max_epochs=1",
        "trainer.precision=bf16-mixed",
        f"+callbacks.probe._target_={__name__}.DtypeProbe",
    )
    result = run(cfg)
    assert result is not None
    expected = {"anomaly_map", "pred_score"} | (set() if method == "patchcore" else {"loss"})
    assert set(DtypeProbe.seen) == expected
    assert all(dtypes == {torch.float32} for dtypes in DtypeProbe.seen.values()), DtypeProbe.seen
