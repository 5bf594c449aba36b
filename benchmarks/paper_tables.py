"""MovieLens benchmarks that reproduce the papers' tables.

Run from a checkout: ``python benchmarks/paper_tables.py --suite rating --datasets ml-1m``.
Results go to ``benchmarks/results/`` next to this script (``--out`` to change it); the
printed tables mark rows that come from earlier runs.

Suites (each writes Markdown tables and appends every run to a CSV):

- ``rating``: the AutoRec protocol (random 90/10, 10% of train for validation, several
  seeds, mean ± 95% interval) for I-AutoRec, U-AutoRec, BiasedMF and the bias-only floor,
  the paper's full-batch optimisers (Rprop, L-BFGS), the deep I-AutoRec and the
  kernelised I-AutoRec, with the papers' numbers beside ours.
- ``topk``: the Mult-VAE strong-generalization protocol (held-out users folded in) and the
  per-user 80/20 protocol, for the autoencoders and the baselines, hyperparameters chosen
  on validation users only; Liang et al. (2018)'s ML-20M numbers beside ours.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's autorec
from _env import RESULTS, environment  # noqa: E402

from autorec._io import atomic_path  # noqa: E402
from autorec.datasets import load_movielens  # noqa: E402
from autorec.metrics import evaluate, mae, rmse  # noqa: E402
from autorec.models import model_class  # noqa: E402
from autorec.models.torch_base import TorchRecommender  # noqa: E402
from autorec.protocols import autorec_protocol, per_user_holdout, strong_generalization  # noqa: E402
from autorec.tuning import tune  # noqa: E402

PAPER_RMSE = {  # Sedhain et al. 2015, Table 1(a)/(b): random 90/10 split; the deep
    # I-AutoRec (500-250-500) is their sec. 3 figure; kernel: Muller et al. 2018 (ML-1M),
    # GLocal-K (Han et al. 2021, ML-100K; their ML-1M 0.8227 adds a global kernel)
    "ml-1m": {"i-autorec": 0.831, "u-autorec": 0.874, "biased-mf": 0.845,
              "i-autorec-rprop": 0.831, "u-autorec-rprop": 0.874, "i-autorec-lbfgs": 0.831,
              "u-autorec-lbfgs": 0.874, "i-autorec-deep": 0.827, "kernel-i-autorec": 0.824},
    "ml-100k": {"kernel-i-autorec": 0.8889},
    "ml-10m": {"i-autorec": 0.782, "u-autorec": 0.867, "biased-mf": 0.803},
}
PAPER_TOPK_ML20M = {  # Liang et al. 2018, Table 2 (ML-20M): Recall@20, Recall@50, NDCG@100
    "mult-vae": (0.395, 0.537, 0.426), "mult-dae": (0.387, 0.524, 0.419),
    "ease": (0.391, 0.521, 0.420),  # EASE's numbers from Steck 2019, same protocol
}
HELDOUT_USERS = {"ml-100k": 100, "ml-1m": 600, "ml-10m": 7_000, "ml-20m": 10_000, "ml-25m": 10_000}

# label -> (registry name, fixed params); rating suite
#: the paper's full-batch optimisation: its plain AutoRec (residual=False), lambda and k = 500
#: as the defaults, epochs chosen on the automatic 10% carve (patience 15)
_FULL_BATCH = {"residual": False, "valid_size": 0.1, "patience": 15}
RATING_MODELS = {
    "i-autorec": ("i-autorec", {}), "u-autorec": ("u-autorec", {}),
    "biased-mf": ("biased-mf", {}), "bias-only": ("biased-mf", {"factors": 0}),
    "i-autorec-rprop": ("i-autorec", {**_FULL_BATCH, "optimizer": "rprop", "lr": 0.01, "epochs": 300}),
    "u-autorec-rprop": ("u-autorec", {**_FULL_BATCH, "optimizer": "rprop", "lr": 0.01, "epochs": 300}),
    "i-autorec-lbfgs": ("i-autorec", {**_FULL_BATCH, "optimizer": "lbfgs", "lr": 1.0, "epochs": 200}),
    "u-autorec-lbfgs": ("u-autorec", {**_FULL_BATCH, "optimizer": "lbfgs", "lr": 1.0, "epochs": 200}),
    # the paper's deep I-AutoRec; lr 1e-3 and the carve (patience 10) as the deep net trains slower
    "i-autorec-deep": ("i-autorec", {"hidden": (500, 250, 500), "residual": False, "lr": 1e-3,
                                     "epochs": 150, "valid_size": 0.1, "patience": 10}),
    "kernel-i-autorec": ("kernel-i-autorec", {}),
}
# label -> (registry name, the configurations autorec.tune tries on the validation users)
TOPK_GRIDS = {
    # β → 0.2 over 200k steps is the paper's ML-20M schedule (233 steps/epoch); on ML-1M
    # (10 steps/epoch) it ends at β = 0.01, so the grid adds β rising to 0.2 over the run
    "mult-vae": ("mult-vae", [{}, {"total_anneal_steps": 10_000}]),
    "mult-dae": ("mult-dae", [{}]),
    "cdae": ("cdae", [{"epochs": 200}, {"lr": 3e-3, "epochs": 200}]),  # 100 epochs: still rising
    # U-AutoRec as a ranker: the loss over every cell, unobserved as 0 (implicit=True);
    # lr and epochs from a first look at ML-1M's validation users (best epoch 28-39 of 60)
    # (valid_size=0, patience=None: as measured before U-AutoRec's carve became a default)
    "u-autorec": ("u-autorec", [{"implicit": True, "lr": 1e-3, "epochs": 60, "l2": v, "valid_size": 0.0,
                                 "patience": None} for v in (100.0, 300.0)]),
    "ease": ("ease", [{"l2": v} for v in (100.0, 300.0, 1000.0, 3000.0)]),
    "als": ("als", [{"factors": f, "regularization": r, "alpha": a}
                    for f in (64, 128) for r in (0.1, 1.0) for a in (1.0, 10.0)]),
    "bpr": ("bpr", [{"factors": f, "learning_rate": lr} for f in (64, 128) for lr in (0.01, 0.05)]),
    "lmf": ("lmf", [{"factors": 30}, {"factors": 30, "iterations": 100}, {"factors": 64, "iterations": 100}]),
    "pop": ("pop", [{}]),
}
QUICK = {"epochs": 15}  # torch models in --quick mode
TOPK_METRICS, TOPK_KS = ("ndcg", "recall"), (10, 20, 50, 100)


def _make(name: str, params: dict, seed: int, quick: bool):
    cls = model_class(name)
    names = cls._param_names()
    params = dict(params)
    for key, value in (("seed", seed), ("progress", False)):
        if key in names:
            params.setdefault(key, value)
    if quick and "epochs" in names:
        params = {**params, **QUICK}
    return cls(**params)


def _fit(model, train, valid):
    start = time.perf_counter()
    if isinstance(model, TorchRecommender):
        model.fit(train, valid)  # torch models: early stopping / best-epoch restore on valid
    else:
        model.fit(train)
    return time.perf_counter() - start


def run_rating(dataset: str, R, seeds, quick: bool, log, models=None, histories=None) -> list[dict]:
    """AutoRec protocol on ``R`` for every rating model and seed; one row per run.

    The defaults of each model were chosen on a validation carve of ML-1M's training part
    (benchmarks/results/autorec_tuning.md), as the paper tuned on 10% of its training data;
    each reported model is then trained with those defaults (a fixed epoch count) on the
    whole 90% training part and scored once on the 10% test part. For the learning curves,
    the first seed also trains every model on the 81% carve, recording the validation RMSE
    of each epoch (protocol ``autorec-valid`` in histories.csv); those fits are not scored.
    """
    chosen = {label: spec for label, spec in RATING_MODELS.items() if not models or label in models}
    rows = []
    for seed in seeds:
        if seed == seeds[0]:
            carve = autorec_protocol(R, valid_size=0.1, seed=seed)
            for label, (name, params) in chosen.items():
                model = _make(name, params, seed, quick)
                seconds = _fit(model, carve.train, carve.valid)
                log(f"{dataset} seed {seed} {label}: validation curve, best valid RMSE "
                    f"{min(h['rmse'] for h in model.history_):.4f} ({seconds:.0f}s)")
                _history_rows(model, {"dataset": dataset, "protocol": "autorec-valid",
                                      "model": label, "seed": seed}, histories)
        proto = autorec_protocol(R, valid_size=0.0, seed=seed)
        for label, (name, params) in chosen.items():
            model = _make(name, params, seed, quick)
            seconds = _fit(model, proto.train, None)
            row = {"suite": "rating", "dataset": dataset, "protocol": "autorec", "model": label,
                   "seed": seed, "params": json.dumps(model.get_params(), default=str),
                   "rmse": rmse(model, proto.test.target), "mae": mae(model, proto.test.target),
                   "fit_seconds": seconds, "epochs": len(getattr(model, "history_", []) or [])}
            rows.append(row)
            log(f"{dataset} seed {seed} {label}: test RMSE {row['rmse']:.4f} ({seconds:.0f}s)")
    return rows


def run_topk(dataset: str, R, protocol: str, quick: bool, log, models=None, histories=None,
             trials_dir: Path | None = None) -> list[dict]:
    """Top-k protocol (``strong`` or ``per-user``): ``autorec.tune`` over each model's
    configurations on the validation users (NDCG@100), the best one reported on test.

    With ``trials_dir``, each search is journaled there (``<dataset>-<protocol>-<label>/
    trials.jsonl``) and an interrupted run resumes; without it, every trial runs afresh.
    """
    if protocol == "strong":
        proto = strong_generalization(R, n_heldout=HELDOUT_USERS.get(dataset, 600), seed=0)
    else:
        proto = per_user_holdout(R, test_size=0.2, valid_size=0.1, threshold=3.5, seed=0)
    log(proto.describe())
    rows = []
    for label, (name, grid) in TOPK_GRIDS.items():
        if models and label not in models:
            continue
        base = _make(name, {}, 0, quick)
        space = grid[:1] if quick else grid
        if quick and "epochs" in base.get_params():  # --quick caps the epochs of every config
            space = [{**params, **QUICK} for params in space]
        search = tune(base, proto.train, proto.valid, space, metric="ndcg@100",
                      out=None if trials_dir is None else trials_dir / f"{dataset}-{protocol}-{label}",
                      log=lambda line, label=label: log(f"{dataset} {protocol} {label} {line}"))
        model, score = search.model, search.best_value
        seconds = float(search.trials.loc[search.trials["value"] == score, "seconds"].iloc[0])
        result = evaluate(model, *proto.test, metrics=TOPK_METRICS, ks=TOPK_KS)
        row = {"suite": "topk", "dataset": dataset, "protocol": protocol, "model": label, "seed": 0,
               "params": json.dumps(model.get_params(), default=str), "valid_ndcg@100": score,
               "fit_seconds": seconds, "n_users": result.n_users}
        for key in result:
            row[key], row[f"{key}_se"] = result[key], result.se[key]
        rows.append(row)
        _history_rows(model, row, histories)
    return rows


def _history_rows(model, row: dict, histories: list | None) -> None:
    """Append the model's per-epoch history to ``histories`` (None: keep nothing)."""
    if histories is None:
        return
    for h in getattr(model, "history_", None) or []:
        histories.append({"dataset": row["dataset"], "protocol": row["protocol"],
                           "model": row["model"], "seed": row["seed"], **h})


# ------------------------------------------------------------------------ reports
def _ci95(values: pd.Series) -> float:
    n = len(values)
    if n < 2:
        return float("nan")
    return float(scipy.stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / np.sqrt(n))


def rating_table(runs: pd.DataFrame) -> str:
    """Markdown: test RMSE mean ± 95% interval per dataset and model, paper beside."""
    lines = ["| dataset | model | RMSE (ours, mean ± 95% CI) | seeds | paper | Δ vs paper | fit s/seed |",
             "|---|---|---|---|---|---|---|"]
    for (dataset, label), g in runs.groupby(["dataset", "model"], sort=False):
        paper = PAPER_RMSE.get(dataset, {}).get(label)
        mean = g["rmse"].mean()
        delta = f"{mean - paper:+.3f}" if paper else ""
        ci = _ci95(g["rmse"])
        cell = f"{mean:.4f} ± {ci:.4f}" if np.isfinite(ci) else f"{mean:.4f} (one seed: no interval)"
        lines.append(f"| {dataset} | {label} | {cell} | {len(g)} | "
                     f"{paper if paper else '—'} | {delta} | {g['fit_seconds'].mean():.0f} |")
    return "\n".join(lines)


def topk_table(runs: pd.DataFrame) -> str:
    """Markdown: Recall@20/50, NDCG@100/@10 ± s.e. per dataset/protocol/model."""
    cols = ["recall@20", "recall@50", "ndcg@100", "ndcg@10"]
    lines = ["| dataset | protocol | model | " + " | ".join(cols)
             + " | paper ML-20M R@20 / R@50 / N@100 | fit s |", "|---" * (len(cols) + 5) + "|"]
    for _, r in runs.iterrows():
        cells = [f"{r[c]:.4f} ± {r[c + '_se']:.4f}" for c in cols]
        paper = PAPER_TOPK_ML20M.get(r["model"])
        paper_cell = " / ".join(f"{v:.3f}" for v in paper) if paper else "—"
        lines.append(f"| {r['dataset']} | {r['protocol']} | {r['model']} | " + " | ".join(cells)
                     + f" | {paper_cell} | {r['fit_seconds']:.0f} |")
    lines += ["", "recall@k is the normalised recall of Liang et al. 2018: hits / min(k, held-out items)."]
    return "\n".join(lines)


def _earlier_runs(runs: pd.DataFrame, command: str) -> str:
    """The other commands whose rows the merged table holds (each row's is in the CSV)."""
    if "command" not in runs:
        return ""
    earlier = runs[runs["command"].notna() & (runs["command"] != command)]
    if earlier.empty:
        return ""
    lines = [f"- `{c}` ({g['run_at'].iloc[-1]}): {', '.join(dict.fromkeys(g['model']))}"
             for c, g in earlier.groupby("command", sort=False)]
    return "\nRows from earlier runs (the CSV names each row's command):\n\n" + "\n".join(lines) + "\n"


def _merge(path: Path, new: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Rows of earlier runs in ``path`` with those of this run replacing the same keys; written."""
    if path.exists():
        old = pd.read_csv(path)
        replaced = old.set_index(keys).index.isin(new.set_index(keys).index)
        new = pd.concat([old[~replaced], new], ignore_index=True)
    _write(path, new.to_csv(index=False))
    return new


def _write(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def main(argv=None) -> int:
    """Entry point; returns the exit status."""
    p = argparse.ArgumentParser(prog="python benchmarks/paper_tables.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", choices=("rating", "topk", "all"), default="all")
    p.add_argument("--datasets", default=None, help="comma-separated (default: ml-1m; ml-100k with --quick)")
    p.add_argument("--seeds", type=int, default=5, help="seeds of the rating suite (default 5)")
    p.add_argument("--protocols", default="strong,per-user", help="top-k protocols")
    p.add_argument("--models", default=None, help="comma-separated model labels of either suite (default: all)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=RESULTS, help=f"results folder (default {RESULTS})")
    p.add_argument("--quick", action="store_true", help="ML-100K, 1 seed, 15 epochs, no grid: a few minutes")
    p.add_argument("--trials-dir", default=None,
                   help="journal each top-k search here (resumable); default: in memory, every trial afresh")
    args = p.parse_args(argv)
    quick = args.quick
    datasets = (args.datasets or ("ml-100k" if quick else "ml-1m")).split(",")
    seeds = range(1 if quick else args.seeds)
    out = Path(args.out)
    tag = "quick-" if quick else ""
    command = "python benchmarks/paper_tables.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"results go to {out.resolve()}", flush=True)
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    models = args.models.split(",") if args.models else None
    rating_rows, topk_rows, histories = [], [], []
    for dataset in datasets:
        R = load_movielens(dataset, args.data_dir)
        if args.suite in ("rating", "all"):
            rating_rows += run_rating(dataset, R, seeds, quick, log, models, histories)
        if args.suite in ("topk", "all"):
            for protocol in args.protocols.split(","):
                topk_rows += run_topk(dataset, R, protocol, quick, log, models, histories,
                                      Path(args.trials_dir) if args.trials_dir else None)
    header = environment(command)
    keys = ["dataset", "protocol", "model", "seed"]
    stamp = {"command": command, "run_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if rating_rows:
        runs = _merge(out / f"{tag}rating_runs.csv", pd.DataFrame([{**r, **stamp} for r in rating_rows]), keys)
        _write(out / f"{tag}rating.md", "# Rating prediction (AutoRec protocol)\n\n" + header
               + _earlier_runs(runs, command) + "\n" + rating_table(runs) + "\n")
        print(rating_table(runs[runs["command"] == command]))  # this run's rows only
        print(f"(the table in {out / f'{tag}rating.md'} also holds earlier runs' rows, marked there)")
    if topk_rows:
        runs = _merge(out / f"{tag}topk_runs.csv", pd.DataFrame([{**r, **stamp} for r in topk_rows]), keys)
        _write(out / f"{tag}topk.md", "# Top-k recommendation\n\n" + header + _earlier_runs(runs, command)
               + "\n" + topk_table(runs) + "\n")
        print(topk_table(runs[runs["command"] == command]))  # this run's rows only
        print(f"(the table in {out / f'{tag}topk.md'} also holds earlier runs' rows, marked there)")
    if histories:
        _merge(out / f"{tag}histories.csv", pd.DataFrame(histories), keys)
    return 0


if __name__ == "__main__":
    sys.exit(main())
