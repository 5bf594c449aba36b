"""``autorec demo``: seven models on MovieLens 100K in a few minutes on a laptop CPU.

Rating models (I-AutoRec, U-AutoRec, BiasedMF) follow the AutoRec protocol (random 90/10
split, 10% of train for early stopping, RMSE on the test ratings). Ranking models
(Mult-VAE, EASE, ALS, Popularity) follow a per-user 80/20 holdout of the ratings >= 4
(NDCG@10, Recall@20). When MovieLens 100K cannot be found or downloaded, the demo says
so in one line and runs on the built-in synthetic data (:mod:`autorec.datasets.synthetic`).
"""
from __future__ import annotations

import sys
import time

__all__ = ["cmd_demo", "DEMO_MODELS"]

#: name -> (protocol, full settings, --quick settings); sized for 2 CPU cores (full settings:
#: 23 s on 2 idle cores, 196 s on 2 cores shared at load 5-7; see the README), tuned on
#: MovieLens 100K with seed 0
DEMO_MODELS = {
    # the library defaults (tuned on ML-1M) for I-AutoRec; U-AutoRec and BiasedMF take
    # bigger steps on ML-100K's 4 batches per epoch (seed 0 test RMSE 0.897 / 0.961 / 0.903)
    "i-autorec": ("autorec", {}, dict(epochs=20)),
    "u-autorec": ("autorec", dict(lr=1e-3, epochs=100, patience=10), dict(lr=3e-3, epochs=15)),
    "biased-mf": ("autorec", dict(lr=3e-3, epochs=30), dict(lr=3e-3, epochs=10)),
    "mult-vae": ("per-user", dict(dims=(200, 50), epochs=50, batch_size=100, lr=1e-3, total_anneal_steps=500),
                 dict(dims=(200, 50), epochs=20, batch_size=100, lr=2e-3, total_anneal_steps=200)),
    "ease": ("per-user", {}, {}),
    "als": ("per-user", dict(factors=16, iterations=15, regularization=0.05),
            dict(factors=16, iterations=5, regularization=0.05)),
    "pop": ("per-user", {}, {}),
}
RATING_METRIC = "rmse"
RANKING_METRICS = ("ndcg@10", "recall@20")


def cmd_demo(args) -> int:
    """Train and evaluate the demo models; print a Markdown results table.

    Returns 1 when a model failed (its row says why), else 0.
    """
    from .. import metrics
    from ..models import get_model
    from ..protocols import autorec_protocol, per_user_holdout

    R, source = _load(args)
    started = time.perf_counter()
    splits = {
        "autorec": autorec_protocol(R, test_size=0.1, valid_size=0.1, seed=args.seed),
        "per-user": per_user_holdout(R, test_size=0.2, seed=args.seed, threshold=3.5),
    }
    print(f"data: {source}: {R.n_users:,} users x {R.n_items:,} items, {R.nnz:,} ratings")
    for split in splits.values():
        print(f"protocol: {split.describe()}")
    print()
    rows, failed = [], 0
    for i, (name, (protocol, full, quick)) in enumerate(DEMO_MODELS.items(), 1):
        split = splits[protocol]
        params = dict(quick if args.quick else full)
        _status(args, f"[{i}/{len(DEMO_MODELS)}] {name} ...")
        try:
            model = get_model(name)
            defaults = model.get_params()
            params.update({k: v for k, v in (("seed", args.seed), ("progress", not args.quiet))
                           if k in defaults})
            model.set_params(**params)
            start = time.perf_counter()
            model.fit(split.train, split.valid)
            seconds = time.perf_counter() - start
            if protocol == "autorec":
                values = {RATING_METRIC: metrics.rmse(model, split.test.target)}
            else:
                result = metrics.evaluate(model, *split.test, metrics=("ndcg", "recall"),
                                          ks=(10, 20))
                values = {m: result[m] for m in RANKING_METRICS}
        except Exception as exc:  # one failing model must not hide the others
            if args.debug:
                raise
            failed += 1
            message = " ".join(str(exc).split())[:120]
            rows.append((name, protocol, "failed", f"{type(exc).__name__}: {message}", ""))
            _status(args, f"[{i}/{len(DEMO_MODELS)}] {name} failed: {message}")
            continue
        for metric, value in values.items():
            rows.append((name, protocol, metric, f"{value:.4f}", f"{seconds:.1f}"))
        _status(args, f"[{i}/{len(DEMO_MODELS)}] {name}: "
                      + ", ".join(f"{m} {v:.4f}" for m, v in values.items()) + f" ({seconds:.1f} s)")
    print("| model | protocol | metric | value | train s |")
    print("|---|---|---|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\n{'quick' if args.quick else 'full'} settings, total {time.perf_counter() - started:.0f} s. "
          "RMSE: lower is better; NDCG@10, Recall@20: higher is better "
          "(Recall@20 normalised: hits / min(20, test items)).")
    return 1 if failed else 0


def _load(args):
    """MovieLens (``--data-dir``, ``$AUTOREC_DATA``, cache, download) or the synthetic data."""
    from ..datasets import DATASETS, dataset_path, load_movielens, synthetic_ratings
    from ..datasets.download import search_dirs
    from ..exceptions import DataError

    fallback = "built-in synthetic data (low-rank, MovieLens-like stars)"
    if args.synthetic:
        return synthetic_ratings(seed=args.seed), fallback
    spec = DATASETS[args.dataset]
    found = dataset_path(args.dataset, args.data_dir)
    try:
        return load_movielens(args.dataset, args.data_dir, download=not args.no_download,
                              progress=not args.quiet), spec.description.split(":")[0]
    except (DataError, OSError) as exc:
        if args.debug:
            raise
        if found.is_file():
            why = f"could not read {found} ({' '.join(str(exc).split())})"
        else:
            places = ", ".join(str(d) for d in search_dirs(args.data_dir))
            why = f"{spec.archive} not found in {places}" + (
                "; downloading is off (--no-download)" if args.no_download
                else f"; download from {spec.url} failed")
        print(f"autorec demo: {why}; using the {fallback} instead", file=sys.stderr)
        return synthetic_ratings(seed=args.seed), fallback


def _status(args, text: str) -> None:
    if not args.quiet:
        print(text, file=sys.stderr, flush=True)
