"""Loss functions against values computed by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from autorec import losses


def test_masked_sse_by_hand_and_zero_grad_off_mask():
    pred = torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.0, 4.0]], requires_grad=True)
    target = torch.tensor([[2.0, 0.0, 1.0], [0.0, 0.0, 5.0]])
    mask = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    loss = losses.masked_sse(pred, target, mask)
    # observed: (1-2)^2 + (3-1)^2 + (4-5)^2 = 1 + 4 + 1
    assert loss.item() == pytest.approx(6.0)
    loss.backward()
    assert torch.equal(pred.grad * (1 - mask), torch.zeros_like(pred))
    assert pred.grad[0, 0].item() == pytest.approx(2 * (1 - 2))


def test_observed_sse_and_l2():
    assert losses.observed_sse(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 1.0])).item() == pytest.approx(5.0)
    assert losses.l2_penalty(torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])).item() == pytest.approx(14.0)


def test_multinomial_nll_sparse_clicks_equal_dense():
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    x = sp.random(5, 7, density=0.4, format="csr", random_state=rng, dtype=np.float32)
    logits = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    dense = losses.multinomial_nll(logits, torch.from_numpy(x.toarray()).double())
    (g_dense,) = torch.autograd.grad(dense, logits)
    sparse = losses.multinomial_nll(logits, x)
    (g_sparse,) = torch.autograd.grad(sparse, logits)
    torch.testing.assert_close(sparse, dense)
    torch.testing.assert_close(g_sparse, g_dense)


def test_multinomial_nll_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # softmax = (1/4, 3/4)
    x = torch.tensor([[1.0, 2.0]])
    expected = -(1 * math.log(0.25) + 2 * math.log(0.75))
    assert losses.multinomial_nll(logits, x).item() == pytest.approx(expected, rel=1e-6)


def test_gaussian_kl_by_hand():
    mu = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]])
    # row 1: 0.5*[(1+1-1-0) + (2+0-1-log2)] ; row 2: 0
    row1 = 0.5 * (1.0 + (1.0 - math.log(2.0)))
    assert losses.gaussian_kl(mu, logvar).item() == pytest.approx(row1 / 2, rel=1e-6)


def test_binary_cross_entropy_by_hand_with_weights():
    logits = torch.tensor([[0.0, 2.0]])
    target = torch.tensor([[1.0, 0.0]])
    full = -(math.log(0.5) + math.log(1 - 1 / (1 + math.exp(-2.0))))
    assert losses.binary_cross_entropy(logits, target).item() == pytest.approx(full, rel=1e-6)
    only_first = losses.binary_cross_entropy(logits, target, torch.tensor([[1.0, 0.0]]))
    assert only_first.item() == pytest.approx(-math.log(0.5), rel=1e-6)


def test_kl_anneal_schedule():
    assert losses.kl_anneal(0) == 0.0
    assert losses.kl_anneal(100_000) == pytest.approx(0.2)  # capped: 0.5 > 0.2
    assert losses.kl_anneal(10_000) == pytest.approx(0.05)
    assert losses.kl_anneal(50, total_anneal_steps=100, anneal_cap=1.0) == pytest.approx(0.5)
    assert losses.kl_anneal(5, total_anneal_steps=0, anneal_cap=0.3) == pytest.approx(0.3)
