"""The cheap CPU dropout: same random function as F.dropout (independent keeps, 1/(1-p) scale), fewer draws."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from adzoo.models.components.dropout import Dropout, dropout, keep_mask


def test_keep_rate_and_scale_match_the_drop_probability() -> None:
    torch.manual_seed(0)
    n = 1_000_000
    for p in (0.1, 0.5, 0.9):
        keep = keep_mask((n,), p, torch.device("cpu"))
        # 6 binomial standard deviations: a wrong threshold or a biased word half is far outside
        assert abs(keep.float().mean().item() - (1 - p)) < 6 * (p * (1 - p) / n) ** 0.5
    x = torch.ones(10_000)
    out = dropout(x, 0.25, training=True)
    values = torch.unique(out)
    assert values.numel() == 2 and values[0] == 0 and values[1].item() == pytest.approx(1 / 0.75)


def test_the_four_draws_of_a_word_are_independent() -> None:
    """Each int64 word gives four 16-bit uniforms; neighbours within a word must not be correlated."""
    torch.manual_seed(1)
    keep = keep_mask((400_000, 4), 0.5, torch.device("cpu")).float()
    corr = torch.corrcoef(keep.T)
    off_diagonal = corr[~torch.eye(4, dtype=torch.bool)]
    assert off_diagonal.abs().max() < 0.01  # about 6 standard errors at n = 400,000


def test_eval_is_the_identity_and_the_gradient_is_the_kept_scale() -> None:
    layer = Dropout(0.2)
    x = torch.randn(64, 32, requires_grad=True)
    assert layer.eval()(x) is x
    out = layer.train()(x)
    out.sum().backward()
    kept = out != 0
    torch.testing.assert_close(x.grad[kept], torch.full_like(x.grad[kept], 1 / 0.8))
    assert (x.grad[~kept] == 0).all() and 0.6 < kept.float().mean() < 0.95


def test_seeded_and_repeatable_and_state_dict_of_nn_dropout() -> None:
    x = torch.randn(5, 7, 3)
    torch.manual_seed(3)
    a = dropout(x, 0.5, training=True)
    torch.manual_seed(3)
    b = dropout(x, 0.5, training=True)
    assert torch.equal(a, b) and a.shape == x.shape
    assert isinstance(Dropout(0.1), torch.nn.Dropout) and Dropout(0.1).state_dict() == {}
    assert torch.equal(dropout(x, 1.0, training=True), F.dropout(x, 1.0, training=True))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        dropout(x, 1.5, training=True)
