"""The shared Trainer: seeding, exact resume, early stopping, NaN guard, history."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import autorec
from autorec.exceptions import TrainingDiverged

from .conftest import two_group_ratings


@pytest.fixture(scope="module")
def implicit():
    R = two_group_ratings()[0].binarize(4)
    train, valid = autorec.split.per_user(R, test_size=0.2, seed=0)
    return train, valid


def _dae(**kw):
    params = dict(dims=(16,), epochs=10, lr=1e-2, batch_size=16, device="cpu", progress=False, seed=0)
    params.update(kw)
    return autorec.MultDAE(**params)


def _weights(model):
    return {k: v.clone() for k, v in model.network_.state_dict().items()}


def test_resume_is_bit_exact(implicit, tmp_path):
    train, valid = implicit
    ckpt = tmp_path / "run.ckpt"
    straight = _dae(epochs=10).fit(train, valid)
    first = _dae(epochs=5).fit(train, valid, checkpoint=ckpt)
    assert len(first.history_) == 5 and ckpt.exists()
    resumed = _dae(epochs=10).fit(train, valid, checkpoint=ckpt, resume=True)
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [h["loss"] for h in straight.history_] == [h["loss"] for h in resumed.history_]


def test_resume_refuses_other_parameters(implicit, tmp_path):
    train, _ = implicit
    ckpt = tmp_path / "run.ckpt"
    _dae(epochs=2).fit(train, checkpoint=ckpt)
    with pytest.raises(ValueError, match="another run"):
        _dae(epochs=4, lr=0.5).fit(train, checkpoint=ckpt, resume=True)


def test_same_seed_same_history_other_seed_differs(implicit):
    train, _ = implicit
    a = _dae(epochs=3).fit(train).history_
    b = _dae(epochs=3).fit(train).history_
    c = _dae(epochs=3, seed=1).fit(train).history_
    assert [h["loss"] for h in a] == [h["loss"] for h in b]
    assert [h["loss"] for h in a] != [h["loss"] for h in c]


def test_early_stopping_restores_best_epoch(implicit):
    train, valid = implicit
    model = _dae(epochs=40, lr=5e-2, patience=3).fit(train, valid)
    scores = [h["ndcg@100"] for h in model.history_]
    best = int(np.argmax(scores))
    assert model.best_epoch_ == best + 1
    assert len(scores) <= 40 and (len(scores) == 40 or len(scores) - 1 - best == 3)
    result = autorec.evaluate(model, train, valid, metrics=("ndcg",), ks=(100,))
    assert result["ndcg@100"] == pytest.approx(scores[best], abs=1e-6)


def test_rmse_validation_for_rating_models():
    R = two_group_ratings()[0]
    train, valid = autorec.split.holdout(R, test_size=0.2, seed=0)
    model = autorec.BiasedMF(factors=4, epochs=5, lr=1e-2, device="cpu", progress=False).fit(train, valid)
    assert all("rmse" in h for h in model.history_)
    assert model.history_[-1]["rmse"] == pytest.approx(autorec.metrics.rmse(model, valid), abs=1e-9) or \
        model.best_epoch_ != len(model.history_)


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_state(implicit, monkeypatch):
    train, _ = implicit
    model = _dae(epochs=5)
    from autorec.models import mult

    real_loss = mult._MultNetwork.loss
    steps_per_epoch = -(-int((train.user_counts() > 0).sum()) // 16)

    def poisoned(self, batch, step):
        loss = real_loss(self, batch, step)
        return loss * float("nan") if step >= steps_per_epoch + 2 else loss

    monkeypatch.setattr(mult._MultNetwork, "loss", poisoned)
    with pytest.raises(TrainingDiverged, match="epoch 2"):
        model.fit(train)
    weights = _weights(model)
    assert all(torch.isfinite(w).all() for w in weights.values())
    monkeypatch.setattr(mult._MultNetwork, "loss", real_loss)
    one_epoch = _dae(epochs=1).fit(train)
    for k, w in _weights(one_epoch).items():  # the last good state is the end of epoch 1
        assert torch.equal(w, weights[k])


def test_history_is_readable(implicit):
    train, valid = implicit
    model = _dae(epochs=3).fit(train, valid)
    assert [h["epoch"] for h in model.history_] == [1, 2, 3]
    assert {"loss", "seconds", "ndcg@100"} <= set(model.history_[0])


def test_device_auto_resolves():
    from autorec.train import resolve_device

    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            resolve_device("cuda")


def test_automatic_validation_carve_is_seeded_and_switchable():
    """valid_size > 0 without valid: a seeded carve picks the best epoch; 0 switches it off."""
    R = two_group_ratings()[0].binarize(4)
    a = _dae(epochs=6, valid_size=0.2).fit(R)
    b = _dae(epochs=6, valid_size=0.2).fit(R)
    assert [h["ndcg@100"] for h in a.history_] == [h["ndcg@100"] for h in b.history_]
    assert a.best_epoch_ == b.best_epoch_ and 1 <= a.best_epoch_ <= 6
    off = _dae(epochs=6).fit(R)
    assert "ndcg@100" not in off.history_[0] and off.best_epoch_ is None
    # the carve is what a user would get from split.per_user with the model's seed
    train, valid = autorec.split.per_user(R, test_size=0.2, seed=0)
    explicit = _dae(epochs=6).fit(train, valid)
    assert [h["ndcg@100"] for h in explicit.history_] == [h["ndcg@100"] for h in a.history_]
    with pytest.raises(ValueError, match="valid_size"):
        _dae(valid_size=1.0).fit(R)


def test_carve_codes_cover_the_whole_training_part():
    """U-AutoRec with a carve: the codes it keeps encode every training rating."""
    R = two_group_ratings()[0]
    model = autorec.UAutoRec(hidden=8, epochs=3, valid_size=0.2, residual=False, device="cpu",
                             progress=False).fit(R)
    codes = model._codes_all()
    full = model.network_.encode(R.X)
    torch.testing.assert_close(codes, full)
    assert model.history_[0]["rmse"] > 0
