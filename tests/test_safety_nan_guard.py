"""NaN guard: TrainingDiverged keeps the truly last finite state.

With one batch per epoch, "last good" used to be copied after the bad step, so the model
kept the very weights that produced the infinite loss. The guard now keeps the last weights
a step has seen give a finite loss, and refuses non-finite weights at the end of an epoch
(the last epoch's step is not followed by another loss to catch them).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from autorec.exceptions import TrainingDiverged
from autorec.train import Trainer


class Scripted(torch.nn.Module):
    """One weight; ``loss(step)`` is ``w * slope[step]`` (the gradient moves ``w`` by a known
    amount), and becomes ``inf`` from step ``bad_from`` on."""

    def __init__(self, bad_from: int, slope: float = 1.0):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([1.0]))
        self.bad_from, self.slope, self.seen = bad_from, slope, []

    def loss(self, batch, step):
        self.seen.append(float(self.w.detach()))
        value = (self.w * self.slope).sum()
        return value * math.inf if step >= self.bad_from else value


def _rows(n: int = 4) -> sp.csr_matrix:
    return sp.csr_matrix(np.ones((n, 3), np.float32))


def _trainer(epochs: int, batch_size: int = 4) -> Trainer:
    return Trainer(epochs=epochs, batch_size=batch_size, lr=0.1)


def test_one_batch_per_epoch_keeps_the_weights_before_the_bad_step():
    net = Scripted(bad_from=2)  # the loss is finite at the weights of steps 0 and 1, not 2
    with pytest.raises(TrainingDiverged, match=r"epoch 3, step 2; the model keeps the weights after epoch 1"):
        _trainer(epochs=5).fit(net, _rows())
    after_1, after_2 = net.seen[1], net.seen[2]  # the weights steps 1 and 2 saw
    assert after_1 != after_2
    assert float(net.w.detach()) == after_1  # not after_2, whose loss was infinite


def test_the_weights_that_gave_the_infinite_loss_are_not_kept():
    """The loss at the weights after epoch 1 is infinite: the model keeps its initial
    weights (the last ones whose loss was finite), not those."""
    net = Scripted(bad_from=1)
    initial = float(net.w.detach())
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 1; the model keeps its initial weights"):
        _trainer(epochs=3).fit(net, _rows())
    assert net.seen == [initial, pytest.approx(initial - 0.1, abs=1e-3)]  # Adam's first step: lr
    assert float(net.w.detach()) == initial


def test_weights_made_non_finite_by_the_last_step_are_refused():
    net = Scripted(bad_from=10**9)

    def poisoned(batch, step):  # at step 1 a finite loss (0) whose gradient is infinite
        net.seen.append(float(net.w.detach()))
        return torch.sqrt(net.w - net.w.detach()).sum() if step == 1 else net.w.sum()

    net.loss = poisoned
    with pytest.raises(TrainingDiverged, match=r"NaN or infinite values after epoch 2; the model keeps the weights after epoch 1"):
        _trainer(epochs=2).fit(net, _rows())
    assert torch.isfinite(net.w).all()
    assert float(net.w.detach()) == net.seen[1]  # the weights after epoch 1


def test_several_batches_per_epoch_keep_the_end_of_the_last_good_epoch():
    net = Scripted(bad_from=5)  # 2 batches per epoch: steps 0-1 epoch 1, 2-3 epoch 2, 4-5 epoch 3
    with pytest.raises(TrainingDiverged, match=r"epoch 3, step 5; the model keeps the weights after epoch 2"):
        _trainer(epochs=4, batch_size=2).fit(net, _rows())
    assert float(net.w.detach()) == net.seen[4]  # the weights at the start of epoch 3
