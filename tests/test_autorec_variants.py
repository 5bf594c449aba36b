"""Deep AutoRec (``hidden`` a tuple), the kernelised KernelIAutoRec, and ``residual``.

The contract battery (tests/test_contract.py) also runs the deep variant and the kernel
model; here: their sparse routes against the dense reference, known answers on a
low-rank problem, the kernel itself, and what ``residual`` promises.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import autorec
from autorec.models.autorec import IAutoRec, UAutoRec
from autorec.models.biased_mf import damped_biases
from autorec.models.kernel_autorec import KernelIAutoRec, local_kernel
from autorec.train import Batch

from .test_autorec import FAST, _loss_and_grads, low_rank, rmse


@pytest.fixture(scope="module")
def data():
    return low_rank()


@pytest.fixture(scope="module")
def split():
    R = low_rank(n_users=300, n_items=200, density=0.2, seed=3)  # as test_autorec's known answer
    return autorec.split.holdout(R, test_size=0.1, seed=0)


def _routes_agree(model, data):
    net, rows = model.network_, model._rows_of(model._inputs(data.X))
    idx = np.arange(0, rows.shape[0], 3)
    batch = Batch(torch.from_numpy(idx), rows[idx], rows.shape[0], torch.device("cpu"), torch.Generator())
    net.route = "dense"
    ref_loss, ref_grads = _loss_and_grads(net, batch)
    net.route = "sparse"
    loss, grads = _loss_and_grads(net, batch)
    net.route = model.route_
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-4)
    assert ref_grads.keys() == grads.keys()
    for name, g in grads.items():
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-4, atol=1e-5, msg=f"d{name}")


# ------------------------------------------------------------------- deep
@pytest.mark.parametrize("cls", [IAutoRec, UAutoRec])
def test_deep_sparse_route_equals_dense(cls, data):
    model = cls(**dict(FAST, hidden=(16, 8, 16), epochs=2)).fit(data)
    assert len(model.network_.layers) == 2
    assert model._codes_all().shape[1] == 16
    _routes_agree(model, data)


def test_deep_iautorec_learns_low_rank(split):
    """Known answer: a rank-3 matrix; the deep net beats the global mean by far."""
    train, test = split
    model = IAutoRec(**dict(FAST, hidden=(32, 16, 32), epochs=60, lr=5e-3, residual=False)).fit(train)
    mean = float(np.sqrt(np.mean((test.X.data - train.X.data.mean()) ** 2)))
    got = rmse(model, test)
    assert got < 0.7 * mean, (got, mean)  # measured 0.44 (deep), 0.39 (kernel) of 1.06


def test_int_hidden_is_todays_network():
    """``hidden=k`` builds the one-layer net: same parameter names as before (files load)."""
    net = IAutoRec(**FAST).fit(low_rank()).network_
    assert set(net.state_dict()) == {"V", "mu", "W", "b"}


def test_bad_hidden_raises(data):
    for bad in ((), (16, 0), "16", 0):
        with pytest.raises(ValueError, match="hidden"):
            IAutoRec(**dict(FAST, hidden=bad)).fit(data)


# ----------------------------------------------------------------- kernel
def test_local_kernel_values():
    u = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, 0.0]])
    v = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    K = local_kernel(u, v)
    torch.testing.assert_close(K, torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.75, 0.0]]))


def test_kernel_net_starts_dense_and_routes_agree(data):
    model = KernelIAutoRec(**dict(FAST, hidden=(16, 16), epochs=2)).fit(data)
    net = model.network_
    Ks = net.kernel_matrices()
    assert len(Ks) == 3 and [tuple(k.shape) for k in Ks] == [(data.n_users, 16), (16, 16), (data.n_users, 16)]
    fresh = KernelIAutoRec(**dict(FAST, hidden=(16, 16), epochs=1, lr=1e-12)).fit(data).network_
    with torch.no_grad():
        assert min(float(k.min()) for k in fresh.kernel_matrices()) > 0.99  # positions start near 0
    _routes_agree(model, data)


def test_kernel_iautorec_learns_low_rank_and_round_trips(split, tmp_path):
    train, test = split
    model = KernelIAutoRec(**dict(FAST, hidden=(32, 32), epochs=30, lr=5e-3, lambda_s=0.01)).fit(train)
    mean = float(np.sqrt(np.mean((test.X.data - train.X.data.mean()) ** 2)))
    got = rmse(model, test)
    assert got < 0.7 * mean, (got, mean)  # measured 0.44 (deep), 0.39 (kernel) of 1.06
    loaded = autorec.load(model.save(tmp_path / "k.pt"))
    assert type(loaded) is KernelIAutoRec and loaded.get_params() == model.get_params()
    coo = test.X.tocoo()
    np.testing.assert_array_equal(loaded.predict(coo.row, coo.col), model.predict(coo.row, coo.col))


def test_kernel_sparsity_pressure_switches_connections_off(data):
    """A large lambda_s drives kernel entries to 0 (the learned sparsity)."""
    def zero_share(lambda_s):
        net = KernelIAutoRec(**dict(FAST, hidden=(16, 16), epochs=30, lambda_s=lambda_s)).fit(data).network_
        with torch.no_grad():
            return float(np.mean([(k == 0).float().mean().item() for k in net.kernel_matrices()]))
    assert zero_share(50.0) > zero_share(0.0) + 0.1


# --------------------------------------------------------------- residual
@pytest.mark.parametrize("cls", [IAutoRec, UAutoRec])
def test_residual_with_huge_l2_falls_back_to_the_bias_floor(cls, data):
    """With the weights held near 0, residual AutoRec is mu + b_u + b_i plus its
    (unregularised) output bias: on the training ratings at least as good as the floor."""
    model = cls(**dict(FAST, l2=1e6, epochs=20, residual=True, valid_size=0.0)).fit(data)
    coo = data.X.tocoo()
    mu = float(data.X.data.mean())
    bu, bi = damped_biases(data.X, mu)
    floor = float(np.sqrt(np.mean((np.clip(mu + bu[coo.row] + bi[coo.col], 1, 5) - coo.data) ** 2)))
    assert rmse(model, data) <= floor + 1e-3, (rmse(model, data), floor)


def test_files_without_biases_load_as_plain_autorec(data, tmp_path):
    model = UAutoRec(**dict(FAST, residual=False)).fit(data)
    path = model.save(tmp_path / "u.pt")
    payload = torch.load(path, weights_only=True)
    from autorec.models._format import sign

    del payload["params"]["residual"]  # a file written before the parameter existed
    payload.pop("digest")
    torch.save(sign(payload), path)  # signed again: only the missing parameter differs
    loaded = autorec.load(path)
    assert loaded.residual is False
    users = np.arange(data.n_users)
    np.testing.assert_array_equal(loaded.score(users, data.X).numpy(), model.score(users, data.X).numpy())


# ------------------------------------------------- ml-100k: defaults above the floor
@pytest.fixture(scope="module")
def ml100k_protocol():
    from .conftest import ml100k

    return autorec.protocols.autorec_protocol(ml100k(), test_size=0.1, valid_size=0.0, seed=0)


@pytest.mark.slow  # ~30 s on one thread: three default fits on ml-100k
@pytest.mark.parametrize("name", ["i-autorec", "u-autorec", "biased-mf"])
def test_ml100k_defaults_beat_the_bias_only_floor(name, ml100k_protocol):
    """Out of the box, every rating model beats mu + b_u + b_i (seed 0: floor 0.9326,
    I 0.889, U 0.902; 5-seed means: floor 0.941, I 0.897, U 0.909, BiasedMF 0.905;
    benchmarks/results/rating.md and rating_defaults.md)."""
    p = ml100k_protocol
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        floor = autorec.BiasedMF(factors=0, device="cpu", progress=False).fit(p.train)
        model = autorec.models.get_model(name, device="cpu", progress=False, seed=0).fit(p.train)
    finally:
        torch.set_num_threads(threads)
    got, base = autorec.metrics.rmse(model, p.test.target), autorec.metrics.rmse(floor, p.test.target)
    assert got < base - 0.02, (name, got, base)
