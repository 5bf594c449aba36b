"""Memory safety: every array read from a file is checked before a kernel sees it.

``weights_only=True`` stops code execution, not memory corruption. Before these checks, a
format-1 I-AutoRec file whose stored CSR indices were shifted by one or far out of range
loaded and then died with SIGSEGV (measured: exit 139 for shifts of +1, +1e5, +1e8), and
a parsed-ratings cache with a bad ``indptr`` corrupted the heap on ``toarray()``. Each
crafted file here is re-signed (its digest recomputed, as an attacker would), so only the
consistency checks stand between it and the kernels; all are used in child processes so
that a missing check fails the test instead of killing the test run.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

import autorec
from autorec.exceptions import ModelFileError

from autorec._digest import digest
from autorec.datasets.cache import PARSED_KEYS

from ._files import cached_model, child, outcomes, payload_of, tiny_data, write

# One child process uses every crafted file (one torch import): a model file is loaded and
# scores every user; a cache is put in place and its archive loaded and densified; a
# checkpoint is resumed. Each job prints a start line, then how it ended.
CHILD = r'''
import json, shutil, sys, warnings
import numpy as np, scipy.sparse as sp
import autorec
from autorec.exceptions import ModelFileError
from tests._files import tiny_data

def say(label, status, message=""):
    print(json.dumps({"label": label, "status": status, "message": message}), flush=True)

def use_model(label, path):
    try:
        m = autorec.load(path)
    except ModelFileError as exc:
        return say(label, "refused", str(exc))
    X = sp.random(m.n_users_, m.n_items_, density=0.2, format="csr", random_state=0, dtype=np.float32)
    users = np.arange(m.n_users_)
    m.recommend(users, X, k=3)
    if m.predicts_ratings:
        m.predict(users, users % m.n_items_)
    say(label, "loaded")

def use_cache(label, crafted, folder, cache_file, good):
    shutil.copyfile(crafted, cache_file)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        R = autorec.load_movielens("ml-100k", folder, download=False, verify=False)
    R.X.toarray()
    same = (R.X != good.X).nnz == 0 and R.users.equals(good.users) and R.items.equals(good.items)
    say(label, "reparsed" if same else "differs", " | ".join(str(w.message) for w in caught))

def use_checkpoint(label, path):
    R = tiny_data().binarize(4)
    try:
        autorec.MultDAE(dims=(8,), epochs=3, batch_size=8, progress=False, device="cpu").fit(
            R, checkpoint=path, resume=True)
    except ModelFileError as exc:
        return say(label, "refused", str(exc))
    say(label, "resumed")

jobs = json.loads(open(sys.argv[1]).read())
good = None
for kind, label, *args in jobs:
    say(label, "start")
    if kind == "cache" and good is None:
        good = autorec.load_movielens("ml-100k", args[1], download=False, verify=False, cache=False)
    {"model": use_model, "cache": use_cache, "checkpoint": use_checkpoint}[kind](
        label, *args, *([good] if kind == "cache" else []))
'''


def _format_1(payload: dict, R) -> dict:
    """The I-AutoRec file as format 1 wrote it: the training ratings as CSR, no codes."""
    old = {k: v for k, v in payload.items() if k != "digest"}
    old.update(format_version=1, users=torch.tensor(R.users.to_numpy(np.int64)),
               items=torch.tensor(R.items.to_numpy(np.int64)))
    old["state"] = {k: v for k, v in payload["state"].items() if k != "codes"}
    X = R.X
    old["state"]["train_X"] = {"indptr": torch.tensor(X.indptr.astype(np.int64)),
                               "indices": torch.tensor(X.indices.astype(np.int64)),
                               "data": torch.tensor(X.data), "shape": list(X.shape)}
    return old


def _with(payload: dict, path: tuple, value) -> dict:
    """A copy of ``payload`` with the entry at ``path`` replaced (removed for ``...``)."""
    out = dict(payload)
    node = out
    for key in path[:-1]:
        node[key] = dict(node[key])
        node = node[key]
    if value is ...:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


def _csr_defects(train_X: dict) -> dict:
    ind, ptr = train_X["indices"], train_X["indptr"]
    swapped = ind.clone()
    swapped[0], swapped[1] = ind[1], ind[0]  # row 0 unsorted
    dup = ind.clone()
    dup[1] = ind[0]  # a repeated column in row 0
    bad_ptr = ptr.clone()
    bad_ptr[3] = ptr[5]  # indptr decreases after row 3
    return {
        "indices shifted by one": dict(train_X, indices=ind + 1),
        "indices far out of range": dict(train_X, indices=ind + 100_000_000),
        "negative index": dict(train_X, indices=torch.where(torch.arange(len(ind)) == 7, -1, ind)),
        "indptr not monotone": dict(train_X, indptr=bad_ptr),
        "indptr ends past nnz": dict(train_X, indptr=torch.cat([ptr[:-1], ptr[-1:] + 50])),
        "indptr too short": dict(train_X, indptr=ptr[:-2]),
        "unsorted row": dict(train_X, indices=swapped),
        "duplicate column": dict(train_X, indices=dup),
        "float indices": dict(train_X, indices=ind.double()),
        "data too short": dict(train_X, data=train_X["data"][:-3]),
        "shape larger than the ids": dict(train_X, shape=[train_X["shape"][0] + 5, train_X["shape"][1]]),
    }


def _model_defects(payloads: dict) -> dict:
    """Files whose parts disagree, one per defect (label -> payload)."""
    pop, ease, als = payloads["pop"], payloads["ease"], payloads["als"]
    ia, ua, mf, vae = payloads["i-autorec"], payloads["u-autorec"], payloads["biased-mf"], payloads["mult-vae"]
    items = pop["items"]
    codes = ia["state"]["codes"]
    V = ua["state"]["network"]["V"]
    return {
        "pop: one item id fewer than counts": _with(pop, ("items",), dict(items, bytes=items["bytes"][:-8])),
        "pop: counts of another length": _with(pop, ("state", "item_counts"), pop["state"]["item_counts"][:-1]),
        "pop: negative counts": _with(pop, ("state", "item_counts"), -pop["state"]["item_counts"]),
        "ease: B not square": _with(ease, ("state", "B"), ease["state"]["B"][:-1]),
        "ease: B float64": _with(ease, ("state", "B"), ease["state"]["B"].double()),
        "als: user factors of more users": _with(als, ("state", "user_factors"),
                                                 torch.cat([als["state"]["user_factors"]] * 2)),
        "als: item factors transposed": _with(als, ("state", "item_factors"),
                                              als["state"]["item_factors"].T.contiguous()),
        "i-autorec: codes of fewer items": _with(ia, ("state", "codes"), codes[:-1]),
        "i-autorec: codes of another size": _with(ia, ("state", "codes"), codes[:, :-1]),
        "i-autorec: NaN codes": _with(ia, ("state", "codes"), codes * float("nan")),
        "i-autorec: known_items too short": _with(ia, ("state", "known_items"), ia["state"]["known_items"][:-1]),
        "i-autorec: known_users too long": _with(ia, ("known_users",), torch.cat([ia["known_users"]] * 2)),
        "u-autorec: V of another size": _with(ua, ("state", "network", "V"), V[:, :-1]),
        "u-autorec: hidden says 16, weights 8": _with(ua, ("params", "hidden"), 16),
        "u-autorec: a missing weight": _with(ua, ("state", "network", "W"), ...),
        "biased-mf: known_items of another length": _with(mf, ("state", "known_items"),
                                                           mf["state"]["known_items"][:-2]),
        "mult-vae: dims say (16, 4)": _with(vae, ("params", "dims"), (16, 4)),
        "ids: repeated user ids": _with(pop, ("users",), dict(pop["users"],
                                                              bytes=torch.zeros_like(pop["users"]["bytes"]))),
        "ids: bytes not whole ids": _with(pop, ("users",), dict(pop["users"], bytes=pop["users"]["bytes"][:-3])),
    }


def _cache_defects(arrays: dict) -> dict:
    ptr, ind = arrays["indptr"], arrays["indices"]
    past, down = ptr.copy(), ptr.copy()
    past[5] = ptr[-1] + 1000
    down[3] = ptr[6]
    return {
        "cache: indptr past the end": dict(arrays, indptr=past),
        "cache: indptr decreasing": dict(arrays, indptr=down),
        "cache: indices out of range": dict(arrays, indices=ind + 10_000_000),
        "cache: indices negative": dict(arrays, indices=ind - 1),
        "cache: indices unsorted": dict(arrays, indices=ind[::-1].copy()),
        "cache: data float64": dict(arrays, data=arrays["data"].astype(np.float64)),
        "cache: timestamps short": dict(arrays, timestamps=arrays["timestamps"][:-1]),
        "cache: items repeated": dict(arrays, items=np.zeros_like(arrays["items"])),
    }


def _checkpoint_defects(good: dict) -> dict:
    def resigned(**changes):
        p = {k: v for k, v in good.items() if k != "digest"}
        p.update(changes)
        return dict(p, digest={"sha256": digest(p)})

    opt = good["optimizer"]
    moments = opt["state"][0]
    net = dict(good["network"])
    first = next(iter(net))
    return {
        "checkpoint: adam moments of another shape": resigned(optimizer=dict(opt, state={
            **opt["state"], 0: dict(moments, exp_avg=moments["exp_avg"][:-1])})),
        "checkpoint: adam state for a parameter the net lacks": resigned(optimizer=dict(opt, state={
            **opt["state"], 99: moments})),
        "checkpoint: adam step not a scalar": resigned(optimizer=dict(opt, state={
            **opt["state"], 0: dict(moments, step=torch.zeros(3))})),
        "checkpoint: weights of another shape": resigned(network=dict(net, **{first: net[first][:-1]})),
        "checkpoint: a missing weight": resigned(network={k: v for k, v in net.items() if k != first}),
        "checkpoint: generator state truncated": resigned(generator=good["generator"][:-8]),
        "checkpoint: negative epoch": resigned(epoch=-1),
        "checkpoint: changed, not re-signed": dict(good, network=dict(net, **{first: net[first] + 1e-3})),
    }


MODEL_NAMES = ("pop", "ease", "als", "i-autorec", "u-autorec", "biased-mf", "mult-vae")


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    """Writes every crafted file, runs the one child over them: ``(outcomes, paths)``."""
    tmp = tmp_path_factory.mktemp("crafted")
    jobs, paths = [], {}

    def job(kind, label, path, *extra):
        paths[label] = path
        jobs.append((kind, label, str(path), *map(str, extra)))

    R = tiny_data()
    payloads = {name: payload_of(cached_model(name), tmp) for name in MODEL_NAMES}
    old = _format_1(payloads["i-autorec"], R)
    job("model", "intact format 1", write(tmp / "ok-format-1.pt", old, resign=False))
    for n, (label, train_X) in enumerate(_csr_defects(old["state"]["train_X"]).items()):
        job("model", f"csr: {label}", write(tmp / f"bad{n}.pt", _with(old, ("state", "train_X"), train_X),
                                            resign=False))
    for name, payload in payloads.items():
        job("model", f"intact {name}", write(tmp / f"ok-{name}.pt", payload))
    for n, (label, payload) in enumerate(_model_defects(payloads).items()):
        job("model", label, write(tmp / f"crafted{n}.pt", payload))

    from .test_movielens import make_fixtures

    folder, cache = tmp / "data", tmp / "cache"
    folder.mkdir()
    make_fixtures.write_archive(folder / "ml-100k.zip", "ml-100k", n_ratings=600, n_users=40,
                                n_items=90, seed=0)
    os.environ["AUTOREC_CACHE"] = str(cache)  # the child inherits it; restored below
    try:
        autorec.load_movielens("ml-100k", folder, download=False, verify=False)
        [cache_file] = (cache / "parsed").glob("*.npz")
        with np.load(cache_file) as npz:
            arrays = {k: npz[k] for k in PARSED_KEYS}
        for n, (label, bad) in enumerate(_cache_defects(arrays).items()):
            with open(tmp / f"cache{n}.npz", "wb") as fh:
                np.savez(fh, **bad, digest=np.asarray(digest(bad)))
            job("cache", label, tmp / f"cache{n}.npz", folder, cache_file)
            paths[label] = cache_file

        ck = tmp / "ck.pt"
        autorec.MultDAE(dims=(8,), epochs=1, batch_size=8, progress=False, device="cpu").fit(
            R.binarize(4), checkpoint=ck)
        good = torch.load(ck, weights_only=True)
        for n, (label, bad) in enumerate(_checkpoint_defects(good).items()):
            torch.save(bad, tmp / f"ck{n}.pt")
            job("checkpoint", label, tmp / f"ck{n}.pt")
        (tmp / "jobs.json").write_text(json.dumps(jobs))
        done = outcomes(child(CHILD, tmp / "jobs.json", timeout=300))
    finally:
        del os.environ["AUTOREC_CACHE"]
    assert set(done) == set(paths)
    return done, paths


def test_crafted_autorec_csr_files_are_refused_not_crashed(crafted):
    done, paths = crafted
    assert done["intact format 1"][0] == "loaded"
    labels = [label for label in done if label.startswith("csr: ")]
    assert len(labels) == 11
    for label in labels:
        status, message = done[label]
        assert status == "refused", label
        assert message.startswith(f"{paths[label]}: state['train_X']"), (label, message)


def test_the_crafted_arrays_are_really_dangerous():
    """Control: the far-out-of-range CSR handed straight to scipy kills the process, so the
    test above is not vacuous."""
    proc = child(r"""
import numpy as np, scipy.sparse as sp
X = sp.random(40, 30, density=0.3, format="csr", random_state=0)
sp.csr_matrix((X.data, X.indices + 100_000_000, X.indptr), shape=X.shape).toarray()
""")
    assert proc.returncode != 0


def test_crafted_model_files_are_refused_naming_file_and_problem(crafted):
    done, paths = crafted
    for name in MODEL_NAMES:
        assert done[f"intact {name}"][0] == "loaded", name
    labels = [label for label in done if ":" in label and label.split(":")[0] in (*MODEL_NAMES, "ids")]
    assert len(labels) == 19
    for label in labels:
        status, message = done[label]
        assert status == "refused", label
        assert message.startswith(f"{paths[label]}: "), (label, message)
        for raw in ("size mismatch", "KeyError", "unexpected keyword", "Traceback"):
            assert raw not in message, (label, message)


def test_messages_say_what_is_wrong(tmp_path):
    """In-process (these defects cannot reach a kernel): the message names the entry."""
    pop = payload_of(cached_model("pop"), tmp_path)
    items = pop["items"]
    path = write(tmp_path / "p.pt", _with(pop, ("items",), dict(items, bytes=items["bytes"][:-8])))
    with pytest.raises(ModelFileError, match=r"p\.pt: state\['item_counts'\] has shape \(30,\), expected \(29,\)"):
        autorec.load(path)
    ua = payload_of(cached_model("u-autorec"), tmp_path)
    path = write(tmp_path / "u.pt", _with(ua, ("params", "hidden"), 16))
    with pytest.raises(ModelFileError, match=r"u\.pt: state\['codes'\] has shape \(40, 8\), expected \(40, 16\)"):
        autorec.load(path)


def test_crafted_parsed_caches_are_ignored_and_reparsed(crafted):
    done, paths = crafted
    labels = [label for label in done if label.startswith("cache: ")]
    assert len(labels) == 8
    for label in labels:
        status, message = done[label]
        assert status == "reparsed", (label, message)
        assert f"ignoring the unreadable parsed cache {paths[label]}" in message, (label, message)


def test_a_changed_cache_is_reparsed(tmp_path, monkeypatch):
    """A cache whose ratings changed but whose digest was not recomputed."""
    from .test_movielens import make_fixtures

    make_fixtures.write_archive(tmp_path / "ml-100k.zip", "ml-100k", n_ratings=600, n_users=40,
                                n_items=90, seed=0)
    monkeypatch.setenv("AUTOREC_CACHE", str(tmp_path / "cache"))
    good = autorec.load_movielens("ml-100k", tmp_path, download=False, verify=False)
    [cache_file] = (tmp_path / "cache" / "parsed").glob("*.npz")
    with np.load(cache_file) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["data"] = arrays["data"].copy()
    arrays["data"][10] = 1.0 if arrays["data"][10] != 1.0 else 2.0  # one rating changed
    with open(cache_file, "wb") as fh:
        np.savez(fh, **arrays)
    with pytest.warns(UserWarning, match="do not match its digest"):
        again = autorec.load_movielens("ml-100k", tmp_path, download=False, verify=False)
    assert (again.X != good.X).nnz == 0


def test_crafted_checkpoints_are_refused_before_adam_steps(crafted):
    done, paths = crafted
    labels = [label for label in done if label.startswith("checkpoint: ")]
    assert len(labels) == 8
    for label in labels:
        status, message = done[label]
        assert status == "refused", label
        assert message.startswith(f"{paths[label]}: "), (label, message)
    assert "does not match its digest" in done["checkpoint: changed, not re-signed"][1]
    assert "optimizer state[0]['exp_avg'] has shape" in done["checkpoint: adam moments of another shape"][1]
