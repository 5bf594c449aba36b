"""Top-100 for every user: implicit's batch ``recommend`` vs autorec's ``ALS.recommend``.

Task: a synthetic implicit-feedback matrix shaped like binarized ML-10M (69,878 users x
10,677 items, ~5M interactions; long-tailed item popularity, log-normal user activity;
generated deterministically from ``--seed``). implicit's ALS is fitted ONCE (64 factors,
3 iterations); both sides then rank all items for all users from the SAME factors,
excluding each user's training items, k = 100:

* implicit: ``model.recommend(all_userids, user_items, N=100, filter_already_liked_items=True)``
  (its C++ batched top-k, all cores; inside ``threadpool_limits(1, "blas")`` as implicit
  advises: with OpenBLAS threads on top of its own it was 2.5x slower here);
* autorec:  ``ALS.from_factors(model.user_factors, model.item_factors).recommend(all_users,
  X, k=100)`` (``BaseRecommender.recommend``: torch matmul per batch, -inf on seen items,
  ``torch.topk``).

Each measurement runs in a fresh subprocess that loads the matrix and the factors, does a
small warm-up call, then times one full call. Agreement: the share
of each user's 100 ids found in the other's list, and the share of identical positions.
Peak memory: ``VmHWM`` growth during the call, after resetting the mark (torch allocations
are invisible to tracemalloc).

Run:  .venv/bin/python benchmarks/bench_als_recommend.py [--repeats 2] [--out benchmarks/results/als_recommend.md]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_data(n_users: int, n_items: int, nnz: int, seed: int) -> sp.csr_matrix:
    """Deterministic ML-10M-like binary matrix (no Python loop over users)."""
    rng = np.random.default_rng(seed)
    pop = 1.0 / (np.arange(n_items) + 20.0) ** 1.1  # Zipf-like popularity, shuffled ids
    pop = pop[rng.permutation(n_items)]
    pop /= pop.sum()
    lengths = rng.lognormal(mean=0.0, sigma=1.0, size=n_users)
    lengths = np.clip(np.round(lengths / lengths.mean() * nnz / n_users * 1.14), 5, n_items // 3)
    lengths = lengths.astype(np.int64)
    rows = np.repeat(np.arange(n_users), lengths)
    cols = rng.choice(n_items, size=len(rows), p=pop)
    X = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n_users, n_items))
    X.sum_duplicates()
    X.data[:] = 1.0  # duplicates collapse to one interaction
    return X


# ------------------------------------------------------------------- children
def _mem_mib() -> dict:
    """Current and peak resident memory of this process (Linux /proc), MiB."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, val = line.split(":")
                out[key] = int(val.split()[0]) / 1024
    return out


def _reset_peak() -> bool:
    """Reset the peak-RSS mark (VmHWM) so it measures one call; False if not allowed.

    Freed heap memory is first handed back (``malloc_trim``): otherwise allocations that
    reuse it would not show up as growth.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def child(method: str, workdir: Path, k: int, breakdown: bool) -> None:
    import torch
    from threadpoolctl import threadpool_limits

    X = sp.load_npz(workdir / "X.npz").tocsr()
    U = np.load(workdir / "user_factors.npy")
    V = np.load(workdir / "item_factors.npy")
    users = np.arange(X.shape[0])
    if method == "implicit":
        from implicit.cpu.als import AlternatingLeastSquares

        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(factors=U.shape[1], num_threads=0)
        model.user_factors, model.item_factors = U, V

        def run(u):  # BLAS single-threaded, as implicit advises (2.5x faster here)
            with threadpool_limits(1, "blas"):
                return model.recommend(u, X[u], N=k, filter_already_liked_items=True)
    else:
        from autorec.models import ALS

        model = ALS.from_factors(U, V)

        def run(u):
            return model.recommend(u, X[u], k=k)
    run(users[:1000])  # warm-up: thread pools, lazy caches
    if breakdown:
        print(json.dumps(_breakdown(model, X, k)))
        return
    reset = _reset_peak()
    rss0 = _mem_mib()["VmRSS"] if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    ids, scores = run(users)
    seconds = time.perf_counter() - t0
    rss1 = _mem_mib()["VmHWM"] if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    np.save(workdir / f"ids_{method}.npy", np.asarray(ids, np.int64))
    np.save(workdir / f"scores_{method}.npy", np.asarray(scores, np.float32))
    print(json.dumps({"seconds": seconds, "rss_before_mib": rss0, "peak_reset": reset, "peak_growth_mib": rss1 - rss0,
                      "torch_threads": torch.get_num_threads()}))


def _breakdown(model, X, k) -> dict:
    """Where autorec's recommend spends its time: the same steps as base.recommend."""
    import torch

    from autorec.models._topk import topk_lowest_index_first
    from autorec.ranking import SCORE_BUDGET_BYTES

    n = X.shape[0]
    bs = max(1, SCORE_BUDGET_BYTES // (4 * X.shape[1]))
    t = {"score": 0.0, "exclude": 0.0, "topk": 0.0, "batch_size": bs}
    with torch.no_grad():
        for start in range(0, n, bs):
            u = np.arange(start, min(start + bs, n))
            t0 = time.perf_counter()
            s = model.score(u, X[u])
            t1 = time.perf_counter()
            seen = X[u].tocoo()
            s[torch.as_tensor(seen.row, dtype=torch.long), torch.as_tensor(seen.col, dtype=torch.long)] = -torch.inf
            t2 = time.perf_counter()
            topk_lowest_index_first(s, k)
            t3 = time.perf_counter()
            t["score"] += t1 - t0
            t["exclude"] += t2 - t1
            t["topk"] += t3 - t2
    return t


def _run_child(method: str, workdir: Path, k: int, breakdown: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--workdir", str(workdir), "--k", str(k)]
    if breakdown:
        cmd.append("--breakdown")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------- parent
def main(args) -> None:
    import implicit
    import torch
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    import autorec

    load_start = os.getloadavg()[0]
    t0 = time.perf_counter()
    X = make_data(args.users, args.items, args.nnz, args.seed)
    t_data = time.perf_counter() - t0
    print(f"data: {X.shape[0]:,} x {X.shape[1]:,}, {X.nnz:,} interactions ({t_data:.1f}s)", flush=True)
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(factors=args.factors, iterations=args.iterations,
                                        random_state=args.seed, num_threads=0)
        t0 = time.perf_counter()
        model.fit(X, show_progress=False)
        t_fit = time.perf_counter() - t0
    print(f"implicit ALS fit: {t_fit:.1f}s", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        sp.save_npz(workdir / "X.npz", X, compressed=False)
        np.save(workdir / "user_factors.npy", model.user_factors)
        np.save(workdir / "item_factors.npy", model.item_factors)
        runs = {"implicit": [], "autorec": []}
        for r in range(args.repeats):  # interleaved, so load drifts hit both sides
            for method in runs:
                res = _run_child(method, workdir, args.k)
                runs[method].append(res)
                print(f"  run {r + 1} {method}: {res['seconds']:.2f}s, "
                      f"peak +{res['peak_growth_mib']:.0f} MiB", flush=True)
        brk = _run_child("autorec", workdir, args.k, breakdown=True)
        ids_i = np.load(workdir / "ids_implicit.npy")
        ids_a = np.load(workdir / "ids_autorec.npy")
        sc_i = np.load(workdir / "scores_implicit.npy")
        sc_a = np.load(workdir / "scores_autorec.npy")

    k = args.k
    overlap = _overlap(ids_i, ids_a)
    same_pos = float((ids_i == ids_a).mean())
    users_identical = float((ids_i == ids_a).all(1).mean())
    score_diff = float(np.abs(sc_i - sc_a).max())
    load_end = os.getloadavg()[0]
    best = {m: min(r["seconds"] for r in rs) for m, rs in runs.items()}
    peak = {m: max(r["peak_growth_mib"] for r in rs) for m, rs in runs.items()}
    ratio = best["autorec"] / best["implicit"]
    print(f"best: implicit {best['implicit']:.2f}s, autorec {best['autorec']:.2f}s, "
          f"autorec/implicit = {ratio:.2f}; id overlap {overlap:.4%}, same position {same_pos:.4%}")

    cpu = _cpu_model()
    cmd = " ".join([".venv/bin/python", "benchmarks/bench_als_recommend.py", *sys.argv[1:]])
    lines = [
        "# ALS top-100 for all users: implicit `recommend` vs autorec `ALS.recommend`",
        "",
        f"Command: `{cmd}`  ",
        f"Date: {time.strftime('%Y-%m-%d')}; CPU: {cpu}; cores: {os.cpu_count()} "
        f"(torch threads {runs['autorec'][0]['torch_threads']}; implicit num_threads=0 = all, "
        "its BLAS limited to 1 thread as it advises); "
        f"Python {platform.python_version()}, implicit {implicit.__version__}, "
        f"torch {torch.__version__}, numpy {np.__version__}, autorec {autorec.__version__}.",
        "",
        f"Data: synthetic, ML-10M-shaped (binarized): {X.shape[0]:,} users x {X.shape[1]:,} items, "
        f"{X.nnz:,} interactions, seed {args.seed} (Zipf-like item popularity, log-normal "
        f"user activity, >= 5 per user). implicit ALS fitted once: {args.factors} factors, "
        f"{args.iterations} iterations, {t_fit:.1f}s. Both sides rank from the same factors, "
        f"k = {k}, training items excluded.",
        "",
        "| | implicit `recommend` (C++ top-k) | autorec `ALS.recommend` (torch) |",
        "|---|---:|---:|",
        "| wall time, best of {} (s) | {:.2f} | {:.2f} |".format(args.repeats, best["implicit"], best["autorec"]),
        "| all runs (s) | {} | {} |".format(*(", ".join(f"{r['seconds']:.2f}" for r in runs[m]) for m in runs)),
        "| peak RSS growth during the call (MiB) | {:.0f} | {:.0f} |".format(peak["implicit"], peak["autorec"]),
        "",
        f"**autorec / implicit time ratio: {ratio:.2f}** (same run, interleaved subprocesses).",
        "",
        f"Agreement: {overlap:.4%} of ids shared per user list; {same_pos:.4%} of positions "
        f"identical; {users_identical:.2%} of users with identical lists; max |score diff| "
        f"{score_diff:.2e} (float32 dot products summed in different orders, so near-ties "
        "can swap places or cross the k-th position).",
        "",
        f"Where autorec's time goes (separate run, batches of {brk['batch_size']:,} users, "
        f"one score block = {brk['batch_size'] * X.shape[1] * 4 / 2**20:.0f} MiB): "
        f"score (matmul) {brk['score']:.2f}s, exclusion of seen items (index_put of -inf) "
        f"{brk['exclude']:.2f}s, top-k + tie ordering {brk['topk']:.2f}s.",
        "",
        "Peak memory: in a fresh subprocess, after loading the data, the factors and a "
        "1,000-user warm-up call, the peak-RSS mark is reset (`/proc/self/clear_refs`) and "
        "the growth of `VmHWM` over `VmRSS` during the call is reported; it includes the "
        "returned arrays "
        f"({X.shape[0]:,} x {k}: implicit int32 ids + float32 scores, autorec int64 ids + "
        "float32 scores).",
        "",
        f"1-minute load average at start / end: {load_start:.1f} / {load_end:.1f} on "
        f"{os.cpu_count()} cores (other jobs share the machine: timings are noisy; the best "
        "of the repeats is reported and the ratio comes from the same run).",
        "",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


def _overlap(a, b, chunk=4096) -> float:
    """Share of the ids of ``a``'s rows found in the same row of ``b``."""
    hits = 0
    for s in range(0, len(a), chunk):
        x, y = a[s:s + chunk], b[s:s + chunk]
        hits += int((x[:, :, None] == y[:, None, :]).any(2).sum())
    return hits / a.size


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--users", type=int, default=69_878)
    p.add_argument("--items", type=int, default=10_677)
    p.add_argument("--nnz", type=int, default=5_000_000)
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/als_recommend.md"))
    p.add_argument("--child", choices=["implicit", "autorec"], help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    p.add_argument("--breakdown", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(a.child, Path(a.workdir), a.k, a.breakdown)
    else:
        main(a)
