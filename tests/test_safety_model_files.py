"""Model and checkpoint files are verified: a digest, and one message per problem.

One flipped bit in stored weights used to load and recommend without complaint (torch
does not check the zip CRC); class/params/weights mismatches, missing keys and unknown
params ended in raw ``size mismatch``, ``KeyError: 'state'`` or ``unexpected keyword
argument``. Files written before the digest (formats 1-2) still load, unverified.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import autorec
from autorec.exceptions import ModelFileError
from autorec.models._format import FORMAT_VERSION

from ._files import TINY, cached_model, payload_of, tiny_data, write

RAW = ("size mismatch", "KeyError", "unexpected keyword", "Traceback", "Error(")


def _scores(model):
    users = np.arange(model.n_users_)
    X = tiny_data().X if model.predicts_ratings else tiny_data().binarize(4).X
    return model.recommend(users, X, k=5)


def _flip_a_bit_in(path, tensor: torch.Tensor) -> None:
    """Flip one bit in the middle of ``tensor``'s bytes inside the file at ``path``."""
    raw = bytearray(path.read_bytes())
    needle = tensor.contiguous().numpy().tobytes()
    at = raw.find(needle)
    assert at >= 0 and raw.find(needle, at + 1) < 0, "the tensor's bytes are not unique in the file"
    raw[at + len(needle) // 2] ^= 0x10
    path.write_bytes(bytes(raw))


def _largest_tensor(state: dict) -> torch.Tensor:
    tensors = []

    def walk(v):
        if isinstance(v, torch.Tensor):
            tensors.append(v)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)

    walk(state)
    return max(tensors, key=lambda t: t.numel())


@pytest.mark.parametrize("name", sorted(TINY))
def test_one_flipped_bit_in_the_weights_is_refused(name, tmp_path):
    model = cached_model(name)
    path = model.save(tmp_path / "m.pt")
    loaded = autorec.load(path)
    for a, b in zip(_scores(model), _scores(loaded)):
        np.testing.assert_array_equal(a, b)
    _flip_a_bit_in(path, _largest_tensor(torch.load(path, weights_only=True)["state"]))
    with pytest.raises(ModelFileError, match=r"m\.pt: the file does not match its digest"):
        autorec.load(path)


def test_a_flipped_bit_in_an_id_or_param_is_refused(tmp_path):
    model = cached_model("pop")
    path = model.save(tmp_path / "m.pt")
    _flip_a_bit_in(path, torch.load(path, weights_only=True)["users"]["bytes"])
    with pytest.raises(ModelFileError, match="does not match its digest"):
        autorec.load(path)


def test_files_without_a_digest_still_load(tmp_path):
    """Format 2 files (no digest; int ids as an int64 tensor, others as a list of str)."""
    model = cached_model("i-autorec")
    payload = payload_of(model, tmp_path)
    old = {k: v for k, v in payload.items() if k != "digest"}
    old.update(format_version=2, users=torch.tensor(model.users_.to_numpy(np.int64)),
               items=[f"i{x}" for x in model.items_])
    path = write(tmp_path / "v2.pt", old, resign=False)
    loaded = autorec.load(path)
    assert loaded.users_.equals(model.users_) and list(loaded.items_) == [f"i{x}" for x in model.items_]
    np.testing.assert_array_equal(_scores(loaded)[0], _scores(model)[0])


def test_a_format_3_file_must_have_its_digest(tmp_path):
    payload = payload_of(cached_model("pop"), tmp_path)
    path = write(tmp_path / "m.pt", payload, resign=False)
    with pytest.raises(ModelFileError, match=r"m\.pt: the file has no digest"):
        autorec.load(path)


def _expect(path, pattern):
    with pytest.raises(ModelFileError) as err:
        autorec.load(path)
    message = str(err.value)
    assert message.startswith(f"{path}: "), message
    assert not any(raw in message for raw in RAW), message
    assert re.search(pattern, message), message


def test_missing_and_unknown_entries_name_the_file(tmp_path):
    payload = payload_of(cached_model("u-autorec"), tmp_path)
    no_state = {k: v for k, v in payload.items() if k != "state"}
    _expect(write(tmp_path / "a.pt", no_state), r"the file misses 'state'")
    _expect(write(tmp_path / "b.pt", dict(payload, extra=1)), r"the file has unknown 'extra'")
    params = dict(payload["params"], hiden=300)
    _expect(write(tmp_path / "c.pt", dict(payload, params=params)),
            r"params has unknown 'hiden': UAutoRec takes hidden, l2")
    _expect(write(tmp_path / "d.pt", dict(payload, params=dict(payload["params"], dropout=0.5))),
            r"params has unknown 'dropout'")
    _expect(write(tmp_path / "e.pt", dict(payload, params=dict(payload["params"], hidden=-3))),
            r"params: hidden must be a positive integer, got -3")
    state = {k: v for k, v in payload["state"].items() if k != "codes"}
    _expect(write(tmp_path / "f.pt", dict(payload, state=state)), r"either 'codes'")
    state = dict(payload["state"], route="warp")
    _expect(write(tmp_path / "g.pt", dict(payload, state=state)), r"state\['route'\] is 'warp'")


def test_class_and_state_mismatch_is_one_message(tmp_path):
    ease = payload_of(cached_model("ease"), tmp_path)
    als = payload_of(cached_model("als"), tmp_path)
    _expect(write(tmp_path / "a.pt", dict(ease, **{"class": "ALS", "params": als["params"]})),
            r"state misses 'user_factors', 'item_factors' and has unknown 'B'")
    _expect(write(tmp_path / "b.pt", dict(ease, **{"class": "Nope"})), r"unknown model class 'Nope'")
    _expect(write(tmp_path / "c.pt", dict(ease, **{"class": "ALS"})), r"params has unknown 'l2'")
    ua = payload_of(cached_model("u-autorec"), tmp_path)
    ia = payload_of(cached_model("i-autorec"), tmp_path)
    _expect(write(tmp_path / "d.pt", dict(ia, state=ua["state"])),  # U- weights in an I- file
            r"state\['codes'\] has shape \(40, 8\), expected \(30, 8\)")
    net = dict(ua["state"]["network"], V=ua["state"]["network"]["V"][:, :4])
    _expect(write(tmp_path / "e.pt", dict(ua, state=dict(ua["state"], network=net))),
            r"state\['network'\]\['V'\] has shape \(30, 4\), expected \(30, 8\)")


def test_newer_and_foreign_files(tmp_path):
    payload = payload_of(cached_model("pop"), tmp_path)
    _expect(write(tmp_path / "a.pt", dict(payload, format_version=FORMAT_VERSION + 1)),
            r"written by a newer autorec")
    _expect(write(tmp_path / "b.pt", dict(payload, format_version="2")), r"format_version is '2'")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "c.pt")
    _expect(tmp_path / "c.pt", r"not an autorec model file")
    (tmp_path / "d.pt").write_bytes(b"PK\x03\x04garbage")
    _expect(tmp_path / "d.pt", r"not a readable autorec model file")
    path = cached_model("pop").save(tmp_path / "e.pt")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _expect(path, r"not a readable autorec model file")


def test_checkpoints_carry_a_digest_and_old_ones_resume(tmp_path):
    R = tiny_data().binarize(4)
    make = lambda epochs: autorec.MultDAE(dims=(8,), epochs=epochs, batch_size=8, progress=False,
                                          device="cpu", seed=3)
    ck = tmp_path / "ck.pt"
    make(2).fit(R, checkpoint=ck)
    payload = torch.load(ck, weights_only=True)
    assert set(payload["digest"]) == {"sha256"}
    _flip_a_bit_in(ck, payload["network"][next(iter(payload["network"]))])
    with pytest.raises(ModelFileError, match=r"ck\.pt: the checkpoint does not match its digest"):
        make(3).fit(R, checkpoint=ck, resume=True)
    old = {k: v for k, v in payload.items() if k != "digest"}  # written before digests
    torch.save(old, ck)
    resumed = make(4).fit(R, checkpoint=ck, resume=True)
    whole = make(4).fit(R)
    for k, v in whole.network_.state_dict().items():
        assert torch.equal(v, resumed.network_.state_dict()[k]), k
    assert len(resumed.history_) == 4


def test_recommend_and_predict_refuse_bad_arguments():
    model = cached_model("biased-mf")
    X = sp.csr_matrix((3, model.n_items_), dtype=np.float32)
    for k in (2.5, True, 0, "3", None):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            model.recommend([0, 1, 2], X, k=k)
    assert model.recommend([0, 1, 2], X, k=np.int64(2))[0].shape == (3, 2)
    with pytest.raises(ValueError, match=r"user_idx 40 \(at position 1\) is out of range: 0\.\.39"):
        model.predict([0, 40], [0, 1])
    with pytest.raises(ValueError, match=r"item_idx -1 \(at position 0\) is out of range"):
        model.predict([0], [-1])
    with pytest.raises(TypeError, match="user_idx must hold integer positions"):
        model.predict([0.5], [1])
    with pytest.raises(TypeError, match="users must hold integer positions"):
        model.recommend([0.7, 1.2, 2.0], X)
    new = model.predict([-1], [3])  # -1: a user not in training (it was the last user)
    bias = float(model.network_.item_bias.detach()[3]) if model.known_items_[3] else 0.0
    assert new[0] == pytest.approx(np.clip(model.global_mean_ + bias, *model.rating_range_))
