"""Top-100 for every user written to Parquet: ``autorec.export_topk`` vs implicit + pandas.

Task: a synthetic implicit-feedback matrix shaped like ML-10M (69,878 users x 10,677
items, ~5M interactions as in ML-10M's ratings >= 4; long-tailed item popularity,
log-normal user activity; deterministic from ``--seed``), and random ALS factors (64).
Both sides rank all items for all users from the SAME factors, excluding each user's
items, k = 100, and write ``user,item,rank,score`` with raw ids to Parquet:

* autorec: ``export_topk(ALS.from_factors(U, V, users, items), R, "recs.parquet", k=100)``
  (batches of users through ``BaseRecommender.recommend``, each batch streamed to a
  pyarrow ParquetWriter row group);
* implicit + pandas: ``AlternatingLeastSquares`` with ``user_factors``/``item_factors``
  set, ``model.recommend(all_userids, user_items, N=100, filter_already_liked_items=True)``
  (its C++ batched top-k, inside ``threadpool_limits(1, "blas")`` as implicit advises),
  then a DataFrame with the raw ids and ``df.to_parquet``.

Each measurement runs in a fresh process that loads the matrix and factors (from .npy
files written once) and times the export; its peak RSS is read by a small parent process
with ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``. A "load only" process gives the
memory both start from.

A last child runs the autorec export once more under ``cProfile`` (process CPU time, so
the selection threads count) and the report lists where its time goes.

Run:  .venv/bin/python benchmarks/bench_export.py [--repeats 2] [--out benchmarks/results/export.md]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]

#: runs a command and prints the peak RSS of its process tree (KiB on Linux)
RSS_WRAPPER = (
    "import json, resource, subprocess, sys\n"
    "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "print(json.dumps({'rc': p.returncode, 'stdout': p.stdout, 'stderr': p.stderr[-2000:],\n"
    "    'maxrss_kib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))\n"
)


def make_data(n_users: int, n_items: int, nnz: int, factors: int, seed: int, workdir: Path) -> dict:
    """Write X (CSR, binary) and random factors; vectorised, deterministic."""
    rng = np.random.default_rng(seed)
    pop = 1.0 / (np.arange(n_items) + 20.0) ** 1.1  # Zipf-like popularity, shuffled ids
    pop = pop[rng.permutation(n_items)]
    pop /= pop.sum()
    lengths = rng.lognormal(0.0, 1.0, n_users)
    lengths = np.round(lengths / lengths.mean() * nnz / n_users * 1.14)  # 1.14: duplicates
    lengths = np.clip(lengths, 5, n_items // 3).astype(np.int64)
    rows = np.repeat(np.arange(n_users), lengths)
    cols = rng.choice(n_items, size=len(rows), p=pop)
    X = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n_users, n_items))
    X.sum_duplicates()
    X.data[:] = 1.0
    sp.save_npz(workdir / "X.npz", X, compressed=False)
    np.save(workdir / "U.npy", (rng.normal(0, 0.1, (n_users, factors))).astype(np.float32))
    np.save(workdir / "V.npy", (rng.normal(0, 0.1, (n_items, factors))).astype(np.float32))
    return {"n_users": n_users, "n_items": n_items, "nnz": int(X.nnz), "factors": factors}


# ------------------------------------------------------------------- children
def child(method: str, workdir: Path, k: int, out: Path) -> None:
    """Load the data, then (unless ``method == "load"``) export and print the timing."""
    import pandas as pd
    from threadpoolctl import threadpool_limits

    X = sp.load_npz(workdir / "X.npz").tocsr()
    U, V = np.load(workdir / "U.npy"), np.load(workdir / "V.npy")
    user_ids = pd.Index(np.arange(1, X.shape[0] + 1) * 10, name="user")  # raw ids != positions
    item_ids = pd.Index(np.arange(1, X.shape[1] + 1) * 7, name="item")
    if method.startswith("load"):  # the memory an export starts from: data + libraries
        import importlib

        for module in (("autorec.models.als", "autorec.export") if method == "load-autorec"
                       else ("implicit.cpu.als", "pyarrow.parquet")):
            importlib.import_module(module)
        print(json.dumps({"seconds": 0.0, "cpu_seconds": 0.0}))
        return
    start = time.perf_counter()
    if method == "profile-autorec":  # the export's stages one after another, CPU-timed
        import torch

        from autorec.data import RatingMatrix
        from autorec.export import _BYTES_PER_SCORE, _WRITERS
        from autorec.models import ALS
        from autorec.models._topk import topk_lowest_index_first

        R = RatingMatrix(X, user_ids, item_ids)
        model = ALS.from_factors(U, V, users=user_ids, items=item_ids)
        batch = max(1, 256 * 2**20 // (_BYTES_PER_SCORE * R.n_items))  # export_topk's default
        stages = dict.fromkeys(("score (matmul)", "seen items to -inf", "top-k selection",
                                "Parquet writing (ids, ranks, pyarrow)"), 0.0)
        writer = _WRITERS["parquet"](out, False, R, None, header=True)
        ranks = np.arange(1, k + 1, dtype=np.int32)

        def timed(name, fn):
            c = time.process_time()
            result = fn()
            stages[name] += time.process_time() - c
            return result

        with torch.no_grad():
            for lo in range(0, R.n_users, batch):
                rows = np.arange(lo, min(lo + batch, R.n_users))
                hist = R.X[rows]
                S = timed("score (matmul)", lambda: model.score(rows, hist))
                seen = hist.tocoo()
                flat = torch.from_numpy(seen.row.astype(np.int64) * R.n_items + seen.col)
                timed("seen items to -inf", lambda: S.view(-1).index_fill_(0, flat, -torch.inf))
                vals, idx = timed("top-k selection", lambda: topk_lowest_index_first(S, k))
                valid = ~np.isneginf(vals)
                timed("Parquet writing (ids, ranks, pyarrow)", lambda: writer.write(
                    rows, valid.sum(axis=1), idx[valid], np.broadcast_to(ranks, idx.shape)[valid],
                    vals[valid]))
        writer.close()
        print(json.dumps({"seconds": time.perf_counter() - start, "cpu_seconds": sum(stages.values()),
                          "top": [[name, t] for name, t in stages.items()], "batch": batch}))
        return
    if method == "autorec":
        from autorec.models import ALS
        from autorec.data import RatingMatrix
        from autorec.export import export_topk

        R = RatingMatrix(X, user_ids, item_ids)
        model = ALS.from_factors(U, V, users=user_ids, items=item_ids)
        start, cpu = time.perf_counter(), time.process_time()
        export_topk(model, R, out, k=k, progress=False)
    else:
        from implicit.cpu.als import AlternatingLeastSquares

        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(factors=U.shape[1], num_threads=0, random_state=0)
            model.user_factors, model.item_factors = U, V
            start, cpu = time.perf_counter(), time.process_time()
            ids, scores = model.recommend(np.arange(X.shape[0]), X, N=k, filter_already_liked_items=True)
        keep = ids >= 0  # (n_users, k); padded entries dropped, as export_topk does
        ranks = np.broadcast_to(np.arange(1, k + 1, dtype=np.int32), ids.shape)
        frame = pd.DataFrame({
            "user": np.repeat(user_ids.to_numpy(), keep.sum(axis=1)),
            "item": item_ids.to_numpy()[ids[keep]],
            "rank": ranks[keep],
            "score": scores[keep].astype(np.float32),
        })
        frame.to_parquet(out, index=False)
    print(json.dumps({"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu}))


def measure(method: str, workdir: Path, k: int, out: Path, threads: int) -> dict:
    """Run one child under the RSS wrapper; returns seconds and peak RSS (MiB)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-c", RSS_WRAPPER, sys.executable, __file__, "--child", method,
           "--workdir", str(workdir), "--k", str(k), "--child-out", str(out)]
    result = json.loads(subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout)
    if result["rc"] != 0:
        raise RuntimeError(f"{method} child failed:\n{result['stderr']}")
    return {**json.loads(result["stdout"].strip().splitlines()[-1]), "rss_mib": result["maxrss_kib"] / 1024}


def agreement(ours: Path, theirs: Path, n_users: int = 2000) -> dict:
    """Same rows? Share of identical (user, rank) -> item and of shared items per user."""
    import pyarrow.parquet as pq

    a, b = pq.read_table(ours).to_pandas(), pq.read_table(theirs).to_pandas()
    first = a["user"].drop_duplicates().iloc[:n_users]
    a, b = a[a["user"].isin(first)], b[b["user"].isin(first)]
    merged = a.merge(b, on=["user", "rank"], suffixes=("_a", "_b"))
    shared = a.merge(b, on=["user", "item"])
    return {"rows_autorec": pq.read_metadata(ours).num_rows,
            "rows_implicit": pq.read_metadata(theirs).num_rows,
            "same_position": float((merged["item_a"] == merged["item_b"]).mean()),
            "same_items": len(shared) / len(a),
            "max_score_diff": float(np.abs(merged["score_a"] - merged["score_b"]).max())}


# ------------------------------------------------------------------- report
def environment(threads: int) -> dict:
    import implicit
    import pandas
    import pyarrow
    import scipy
    import torch

    cpu = "unknown"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "threads": threads,
            "load": os.getloadavg(), "python": platform.python_version(),
            "versions": f"numpy {np.__version__}, scipy {scipy.__version__}, "
                        f"pandas {pandas.__version__}, pyarrow {pyarrow.__version__}, "
                        f"torch {torch.__version__}, implicit {implicit.__version__}"}


def report(shape, runs, agree, env, args, command, profile) -> str:
    best = {m: min(r["seconds"] for r in rs) for m, rs in runs.items()}
    cpu = {m: min(r["cpu_seconds"] for r in rs) for m, rs in runs.items()}
    rss = {m: max(r["rss_mib"] for r in rs) for m, rs in runs.items()}
    base = {m: rss[f"load-{m}"] for m in ("autorec", "implicit")}
    lines = [
        "# Export: top-100 for every user to Parquet",
        "",
        f"Task: {shape['n_users']:,} users x {shape['n_items']:,} items, {shape['nnz']:,} interactions "
        f"(synthetic, ML-10M-shaped, long-tailed), {shape['factors']} random ALS factors, k = {args.k}, "
        "seen items excluded, raw ids, written to Parquet (`user,item,rank,score`). "
        "Both sides use the same factors.",
        "",
        "| method | wall s (best of %d) | CPU s | peak RSS MiB | before the export | export's own |"
        % args.repeats,
        "|---|---:|---:|---:|---:|---:|",
        f"| autorec `export_topk(..., 'recs.parquet', k={args.k})` | {best['autorec']:.2f} | "
        f"{cpu['autorec']:.2f} | {rss['autorec']:.0f} | {base['autorec']:.0f} | "
        f"{rss['autorec'] - base['autorec']:+.0f} |",
        f"| implicit `recommend(all, X, N={args.k})` + pandas `to_parquet` | {best['implicit']:.2f} | "
        f"{cpu['implicit']:.2f} | {rss['implicit']:.0f} | {base['implicit']:.0f} | "
        f"{rss['implicit'] - base['implicit']:+.0f} |",
        "",
        f"Time ratio autorec / implicit+pandas: **{best['autorec'] / best['implicit']:.2f}x** wall, "
        f"**{cpu['autorec'] / cpu['implicit']:.2f}x** CPU (process time summed over threads); "
        f"peak RSS ratio: **{rss['autorec'] / rss['implicit']:.2f}x** (the export's own memory: "
        f"{(rss['autorec'] - base['autorec']) / max(rss['implicit'] - base['implicit'], 1e-9):.2f}x). "
        "'before the export' is a process that loads the same data and imports the same "
        "libraries (torch for autorec; implicit, pandas, pyarrow for the other) and stops.",
        f"All runs (s): autorec {_times(runs['autorec'])}; implicit {_times(runs['implicit'])}.",
        "",
        f"Agreement on the first 2,000 users: {agree['same_position']:.4%} of (user, rank) "
        f"positions hold the same item, {agree['same_items']:.4%} of items shared, largest score "
        f"difference {agree['max_score_diff']:.2e}; rows written: {agree['rows_autorec']:,} (autorec) "
        f"vs {agree['rows_implicit']:,} (implicit). Ties and float32 rounding explain any difference.",
        "",
        "Wall time covers scoring, top-k, seen-item filtering, id mapping and writing; not "
        "loading. Peak RSS is the child's `ru_maxrss` (via `getrusage(RUSAGE_CHILDREN)` in "
        "a wrapper process), so it includes the interpreter, the libraries and the data. "
        "export_topk's batch is derived from `memory_budget_mb=256` (default).",
        "",
        f"Where autorec's time goes: one more run doing the export's stages one after another "
        f"(no writer thread), each timed in process CPU time (all threads), batches of "
        f"{profile['batch']:,} users as export_topk's default; {profile['cpu_seconds']:.2f} CPU s in all:",
        "",
        "| stage | CPU s | share |",
        "|---|---:|---:|",
        *[f"| {name} | {t:.2f} | {t / profile['cpu_seconds']:.0%} |" for name, t in profile["top"]],
        "",
        f"- command: `{command}`",
        f"- CPU: {env['cpu']}, {env['cores']} cores visible, {env['threads']} threads "
        f"(torch, OpenMP, implicit); load average at start {env['load'][0]:.1f}",
        f"- Python {env['python']}, {env['versions']}",
    ]
    return "\n".join(lines) + "\n"


def _times(results) -> str:
    return ", ".join(f"{r['seconds']:.2f}" for r in results)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=69_878)
    p.add_argument("--items", type=int, default=10_677)
    p.add_argument("--nnz", type=int, default=5_000_000)
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="write the Markdown report here")
    p.add_argument("--child", choices=("load-autorec", "load-implicit", "autorec", "implicit",
                                       "profile-autorec"),
                   help=argparse.SUPPRESS)
    p.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child, args.workdir, args.k, args.child_out)
        return 0
    command = ".venv/bin/python benchmarks/bench_export.py " + " ".join(argv or sys.argv[1:])
    env = environment(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
        work = Path(tmp)
        shape = make_data(args.users, args.items, args.nnz, args.factors, args.seed, work)
        runs = {m: [measure(m, work, args.k, work / "none", args.threads)]
                for m in ("load-autorec", "load-implicit")}
        runs.update(autorec=[], implicit=[])
        for _ in range(args.repeats):  # alternate, so drifting load hits both alike
            for method in ("autorec", "implicit"):
                runs[method].append(measure(method, work, args.k, work / f"{method}.parquet", args.threads))
                print(method, runs[method][-1], file=sys.stderr, flush=True)
        agree = agreement(work / "autorec.parquet", work / "implicit.parquet")
        profile = measure("profile-autorec", work, args.k, work / "profiled.parquet", args.threads)
    text = report(shape, runs, agree, env, args, command.strip(), profile)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
