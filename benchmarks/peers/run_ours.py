"""One of our models (or raw ``implicit``) on a split, in the project venv; one JSON line.

``python run_ours.py SPLIT_DIR rating|topk MODEL '{"param": value}'``: MODEL is a name in
``autorec.MODELS``, or ``implicit-als`` / ``implicit-bpr`` for the implicit library called
directly (the peer our ``als`` / ``bpr`` wrap). Run by ``run_peers.py``, one process each.

- rating: fit on ``train.tsv`` with ``test.tsv`` as the per-epoch validation (the time to
  the best epoch is then the time to the best test RMSE, the same for every side that
  reports it); RMSE of the kept model on ``test.tsv``.
- topk: fit on ``train.tsv``, validation NDCG@100 on ``valid.tsv`` (history ``train``) every
  epoch; top-100 of each test user with train + valid excluded, NDCG@100 on ``test.tsv``
  by ``common.ndcg_at_k`` (the same function scores the peers' lists).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Clock, ndcg_at_k, peak_rss_mb  # noqa: E402


def _clocked(model, clock: Clock):
    """Wrap the model's per-epoch Validation so that each score is time-stamped."""
    from autorec.train import Validation

    make = model._validation

    def validation(part):
        v = make(part)
        if v is None:
            return None
        clock.lower_is_better = v.lower_is_better

        def score():
            value = v.score()
            clock.mark(value)
            return value
        return Validation(v.metric, score, v.lower_is_better)
    model._validation = validation


def run_rating(split: Path, name: str, params: dict) -> dict:
    import autorec
    import splits

    p = splits.read_parts(split, ("train", "test"))
    model = autorec.MODELS[name](**{"progress": False, "device": "cpu", **params})
    clock = Clock(lower_is_better=True)
    _clocked(model, clock)
    clock.start()
    model.fit(p["train"], p["test"])
    fit_s = time.perf_counter() - clock.t0
    to_best, _, best_epoch = clock.best()
    return {"fit_s": fit_s, "to_best_s": to_best, "best_epoch": best_epoch,
            "epochs_run": len(model.history_), "rmse": float(autorec.metrics.rmse(model, p["test"]))}


def _relevant(part) -> dict:
    coo = part.X.tocoo()
    users, items = part.users.to_numpy(), part.items.to_numpy()
    out: dict = {}
    for u, i in zip(users[coo.row], items[coo.col]):
        out.setdefault(u, set()).add(i)
    return out


def run_topk(split: Path, name: str, params: dict) -> dict:
    import numpy as np

    import autorec
    import splits

    p = splits.read_parts(split, rating=False)
    train, valid, test = p["train"], p["valid"], p["test"]
    history = train.replace(train.X + valid.X)
    clock = Clock()
    if name.startswith("implicit-"):
        import implicit
        from threadpoolctl import threadpool_limits

        cls = {"implicit-als": implicit.cpu.als.AlternatingLeastSquares,
               "implicit-bpr": implicit.cpu.bpr.BayesianPersonalizedRanking}[name]
        algo = cls(random_state=0, **{"num_threads": 1, **params})
        clock.start()
        with threadpool_limits(1, "blas"):
            algo.fit(train.X.tocsr(), show_progress=False)
        fit_s = time.perf_counter() - clock.t0
        users = np.unique(test.X.tocoo().row)
        ids, _ = algo.recommend(users, history.X[users].tocsr(), N=100, filter_already_liked_items=True)
        best_epoch = None
    else:
        model = autorec.MODELS[name](**{k: v for k, v in
                                        {"progress": False, "device": "cpu", **params}.items()
                                        if k in autorec.MODELS[name]._param_names()})
        clock.start()
        if hasattr(model, "_validation"):  # torch models: validation every epoch
            _clocked(model, clock)
            model.fit(train, valid=autorec.protocols.EvalPart(train, valid))
        else:  # closed form / implicit: one fit, nothing to validate
            model.fit(train)
        fit_s = time.perf_counter() - clock.t0
        users = np.unique(test.X.tocoo().row)
        ids, _ = model.recommend(users, history.X[users], k=100)
        best_epoch = getattr(model, "best_epoch_", None)
    to_best, best_valid, _ = clock.best()
    item_ids, user_ids = train.items.to_numpy(), train.users.to_numpy()
    topk = {user_ids[u]: list(item_ids[np.asarray(row)]) for u, row in zip(users, ids)}
    return {"fit_s": fit_s, "to_best_s": to_best, "best_epoch": best_epoch,
            "valid_ndcg@100": best_valid, "ndcg@100": ndcg_at_k(topk, _relevant(test), 100)}


def main(split: str, task: str, name: str, params: str = "{}") -> None:
    t0 = time.perf_counter()
    import autorec  # noqa: F401
    import torch  # noqa: F401  (what every torch model pays; counted apart from the fit)

    import_s = time.perf_counter() - t0
    kwargs = json.loads(params)
    result = (run_rating if task == "rating" else run_topk)(Path(split), name, kwargs)
    side = "implicit" if name.startswith("implicit-") else "autorec"
    print(json.dumps({"side": side, "model": name, "params": kwargs, "import_s": import_s,
                      **result, "peak_rss_mb": peak_rss_mb()}))


if __name__ == "__main__":
    main(*sys.argv[1:5])
