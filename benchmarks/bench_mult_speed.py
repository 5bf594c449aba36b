"""Training speed and peak memory of Mult-VAE / Mult-DAE: the library vs a dense reference.

Trainer steps (loss, backward, fused Adam; batches of 500 users, dropout 0.5) of two networks
with the same weights on the same batches, interleaved: ``ours`` = the library's
``_MultNetwork.loss`` (first layer ``SparseLinear``: ``embedding_bag`` on the stored clicks);
``dense`` = :class:`DenseMult`, a port of Liang et al.'s TF code (batch densified to (B, I)).

    python benchmarks/bench_mult_speed.py --data /work/shared/datasets --threads 1 [--quick]

Writes ``benchmarks/results/mult_speed.md`` and ``.csv`` (every measured row) atomically.
"""
from __future__ import annotations

import argparse
import csv
import ctypes
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

import numpy as np
import scipy
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import autorec  # noqa: E402
from autorec._io import atomic_path  # noqa: E402
from autorec.losses import gaussian_kl, kl_anneal, l2_penalty, multinomial_nll  # noqa: E402
from autorec.models.mult import _MultNetwork  # noqa: E402
from autorec.train import Batch, make_adam  # noqa: E402

MODELS = {"Mult-VAE": dict(dims=(600, 200), variational=True, l2=0.0),
          "Mult-DAE": dict(dims=(200,), variational=False, l2=0.01)}
VARIANTS = ("ours", "dense")
BATCH, DROPOUT, ANNEAL_STEPS, ANNEAL_CAP = 500, 0.5, 200_000, 0.2
MiB, PROFILED, CPU = 2.0**20, 3, torch.device("cpu")  # PROFILED: steps under torch.profiler per child
#: the report: title -> (explanation, columns (header, row key or function of a row, format spec;
#: "" = a left-aligned text column))
TABLES = {
    "Time per step and per epoch (batch 500, dropout 0.5, fused Adam as in the Trainer)": (
        "Variants interleaved batch by batch after one untimed warm-up batch; s/epoch = median s/step x batches "
        "per epoch; `fwd+bwd` leaves out the Adam update. Matmul FLOPs: 3 products of 2·B·a·b per linear layer "
        "(no input gradient of the first; `ours` does its two on an average batch's clicks, 2·nnz·d each); "
        "`matmul share` = their time at the measured matmul rate / measured median fwd+bwd.",
        [("batches timed / epoch", lambda r: f"{r['batches_timed']} / {r['batches_per_epoch']}", ">"),
         ("s/step (median)", "step_s_median", ".3f"), ("s/epoch", "s_per_epoch", ".1f"),
         ("fwd+bwd s/epoch", "fwd_bwd_s_per_epoch", ".1f"), ("speed-up vs dense (epoch)", "speedup_epoch", ".2f"),
         ("(fwd+bwd)", "speedup_fwd_bwd", ".2f"), ("matmul GFLOP/step", "matmul_gflop_per_step", ".1f"),
         ("matmul share", "share_of_rate", ".0%")]),
    "Peak memory of one training step (fresh subprocess per row, the epoch's first batch)": (
        "After a warm-up step and `malloc_trim`: `peak RSS growth` = "
        "VmHWM (reset through `/proc/self/clear_refs` just before the step) minus RSS before; `ru_maxrss` is "
        "not used: it cannot be reset, and a child starts at its parent's peak. Tensor bytes: the next "
        f"{PROFILED} steps under `torch.profiler(profile_memory=True)`.",
        [("params MiB", "params_mib", ".0f"), ("batch nnz", "batch_nnz", ","), ("peak RSS growth MiB",
         "rss_growth_mib", ".0f"), ("tensors allocated MiB/step", "allocated_mib_per_step", ".0f"), ("peak live "
         "tensors MiB", "peak_live_mib", ".0f"), ("dense / this (RSS)", "rss_ratio", ".2f"), ("(peak live)",
         "peak_live_ratio", ".2f")]),
    f"Where the time goes (self CPU time of the {PROFILED} profiled steps, same subprocesses)": (
        "`mm`/`addmm`: the linear layers (both passes); `_embedding_bag*`: ours' first layer; `_log_softmax*`: "
        "the softmax over all items; `mul`: the likelihood's x·log p, dropout; `uniform_`: dense's dropout draw.",
        [("slowest ops", "top_ops", "")]),
}


def layer_sizes(model: str, n_items: int) -> tuple[list, list]:
    """(in, out) sizes of the encoder's and the decoder's linear layers."""
    *hidden, latent = MODELS[model]["dims"]
    enc = [n_items, *hidden, 2 * latent if MODELS[model]["variational"] else latent]
    dec = [latent, *reversed(hidden), n_items]
    return list(zip(enc[:-1], enc[1:])), list(zip(dec[:-1], dec[1:]))


class DenseMult(nn.Module):
    """Mult-VAE/DAE as in the authors' TF code: dense (B, I) input, ``nn.Linear`` first layer.

    Parameter names as in ``_MultNetwork`` (the first weight is its transpose); same loss.
    """

    def __init__(self, model: str, n_items: int, dropout: float):
        super().__init__()
        enc, dec = layer_sizes(model, n_items)
        self.encoder = nn.ModuleList(nn.Linear(a, b) for a, b in enc)
        self.decoder = nn.ModuleList(nn.Linear(a, b) for a, b in dec)
        self.variational, self.latent, self.dropout = MODELS[model]["variational"], dec[0][0], dropout
        self.l2 = MODELS[model]["l2"]

    def loss(self, batch: Batch, step: int) -> torch.Tensor:
        """Multinomial NLL (+ β·KL for the VAE, + l2·Σ||W||² for the DAE) of one batch."""
        x = batch.dense()  # (B, I)
        h = F.normalize(x, dim=1)  # (B, I)
        if self.dropout > 0:
            h = h * (torch.rand(x.shape, generator=batch.generator) >= self.dropout) / (1 - self.dropout)
        for i, layer in enumerate(self.encoder):
            h = layer(h if i == 0 else torch.tanh(h))  # (B, d_i)
        if self.variational:
            mu, logvar = h[:, : self.latent], h[:, self.latent:]  # (B, latent) each
            h = mu + torch.randn(mu.shape, generator=batch.generator) * torch.exp(0.5 * logvar)
        for i, layer in enumerate(self.decoder):
            h = layer(h if self.variational and i == 0 else torch.tanh(h))  # last: (B, I)
        loss = multinomial_nll(h, x)
        if self.variational:
            return loss + kl_anneal(step, ANNEAL_STEPS, ANNEAL_CAP) * gaussian_kl(mu, logvar)
        return loss + self.l2 * l2_penalty(*(m.weight for m in [*self.encoder, *self.decoder]))


def build(variant: str, model: str, n_items: int, dropout: float = DROPOUT) -> nn.Module:
    """The network of ``variant`` ("ours" or "dense"), with the weights of a ``_MultNetwork`` seeded by 0."""
    cfg = MODELS[model]
    torch.manual_seed(0)
    ours = _MultNetwork(n_items, cfg["dims"], cfg["variational"], dropout, cfg["l2"], ANNEAL_STEPS, ANNEAL_CAP)
    if variant == "ours":
        return ours
    ref, state = DenseMult(model, n_items, dropout), ours.state_dict()
    state["encoder.0.weight"] = state["encoder.0.weight"].t()  # SparseLinear (I, d) -> nn.Linear (d, I)
    ref.load_state_dict(state)
    return ref


def ml20m_sized(seed=0, n_users=136_677, n_items=20_108, nnz=10_000_000) -> sp.csr_matrix:
    """Generated clicks (float32 ones) of ML-20M's binarised shape and count, cached in the temp folder.

    User activity log-normal (σ 1.3: median ~35 clicks), item popularity Zipf-like
    (1/(rank + 21), popular items at random ids); distinct cells drawn until ``nnz``.
    """
    cache = Path(tempfile.gettempdir()) / f"autorec-bench-ml20m-clicks-{seed}-{n_users}-{n_items}-{nnz}.npz"
    if cache.exists():
        return sp.load_npz(cache).tocsr()
    rng = np.random.default_rng(seed)
    w_user = np.maximum(rng.lognormal(0.0, 1.3, n_users), 0.15)  # (n_users,)
    w_item = 1.0 / (rng.permutation(n_items) + 21.0)  # (n_items,)
    keys = np.empty(0, dtype=np.int64)
    while len(keys) < nnz:
        draw = int((nnz - len(keys)) * 1.2) + 1000
        u, i = rng.choice(n_users, draw, p=w_user / w_user.sum()), rng.choice(n_items, draw, p=w_item / w_item.sum())
        keys = np.unique(np.concatenate([keys, u * n_items + i]))
    keys = np.sort(rng.choice(keys, nnz, replace=False))  # (nnz,), row-major
    X = sp.csr_matrix((np.ones(nnz, np.float32), (keys // n_items, keys % n_items)), shape=(n_users, n_items))
    sp.save_npz(cache, X, compressed=False)
    return X


def batch_rows(X: sp.csr_matrix) -> tuple[list[np.ndarray], int]:
    """One epoch's row batches as the Trainer makes them (non-empty rows, shuffled); trainable rows."""
    order = np.random.default_rng(0).permutation(np.flatnonzero(np.diff(X.indptr) > 0))
    return [np.sort(order[lo:lo + BATCH]) for lo in range(0, len(order), BATCH)], len(order)


def train_step(net: nn.Module, opt, batch: Batch, step: int) -> tuple[float, float]:
    """One Trainer step; seconds of (loss + backward, whole step with the Adam update)."""
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    net.loss(batch, step).backward()
    t1 = time.perf_counter()
    opt.step()
    return t1 - t0, time.perf_counter() - t0


def time_epoch(X: sp.csr_matrix, model: str, n_batches: int) -> dict:
    """``{variant: {column: value}}``: median s per step and per fwd+bwd, and both per epoch.

    ``n_batches`` steps of each variant on the clicks ``X`` (n_users, I), interleaved, after one
    untimed warm-up batch; past an epoch the batches wrap into the next.
    """
    batches, n_rows = batch_rows(X)
    nets = {v: build(v, model, X.shape[1]) for v in VARIANTS}
    opts = {v: make_adam(net, 1e-3, 0.0) for v, net in nets.items()}  # as the Trainer
    times, gen = {v: [] for v in VARIANTS}, torch.Generator().manual_seed(0)
    for j in range(n_batches + 1):
        batch = Batch(torch.from_numpy(batches[j % len(batches)]), X[batches[j % len(batches)]], n_rows, CPU, gen)
        for v in (VARIANTS if j % 2 else VARIANTS[::-1]):
            t = train_step(nets[v], opts[v], batch, j)
            if j:  # batch 0 warms up
                times[v].append(t)
    out = {}
    for v, t in times.items():
        fb, st = np.median(t, axis=0)
        out[v] = {"batches_timed": n_batches, "batches_per_epoch": len(batches), "step_s_median": st,
                  "fwd_bwd_s_median": fb, "s_per_epoch": st * len(batches), "fwd_bwd_s_per_epoch": fb * len(batches)}
    return out


def child_memory(model: str, variant: str, path: str) -> dict:
    """Peak memory (MiB) and slowest ops of a training step on the batch at ``path`` (.npz, (B, I)).

    After a warm-up step (Adam's state made), freed memory handed back (malloc_trim) and VmHWM
    reset (/proc/self/clear_refs), one step gives the RSS growth; ``PROFILED`` more under
    torch.profiler the tensor bytes and the op times.
    """
    def status_kib(key):
        return int(next(ln.split()[1] for ln in open("/proc/self/status") if ln.startswith(key + ":")))

    X = sp.load_npz(path).tocsr()  # (B, I)
    net = build(variant, model, X.shape[1])
    opt = make_adam(net, 1e-3, 0.0)
    batch = Batch(torch.arange(X.shape[0]), X, X.shape[0], CPU, torch.Generator().manual_seed(0))
    train_step(net, opt, batch, 0)
    opt.zero_grad(set_to_none=True)
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    rss0 = status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
    train_step(net, opt, batch, 1)
    rss_growth = (status_kib("VmHWM") - rss0) * 1024
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        for step in range(2, 2 + PROFILED):
            train_step(net, opt, batch, step)
    mem = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    nbytes = np.array([b for _, b in mem], dtype=np.int64)
    ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in ops)
    return {"params_mib": sum(p.numel() * 4 for p in net.parameters()) / MiB, "batch_nnz": X.nnz,
            "rss_growth_mib": rss_growth / MiB, "allocated_mib_per_step": nbytes[nbytes > 0].sum() / PROFILED / MiB,
            "peak_live_mib": max(0, np.cumsum(nbytes).max()) / MiB,
            "top_ops": ", ".join(f"{e.key.removeprefix('aten::')} {e.self_cpu_time_total / total:.0%}"
                                 for e in ops[:5])}


def run_child(model: str, variant: str, path: str, threads: int) -> dict:
    """:func:`child_memory` in a fresh interpreter (this script with ``--child``)."""
    cmd = [sys.executable, __file__, "--child", model, variant, path, "--threads", str(threads)]
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1])


def measure(datasets: list[tuple], rate: float, threads: int) -> list[dict]:
    """Every measured number, one dict per (data, model, variant): the CSV's rows.

    ``datasets``: (name, X, batches to time) each; ``rate``: the measured matmul FLOP/s.
    """
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-mult-") as tmp:
        for name, X, n_batches in datasets:
            sp.save_npz(path := os.path.join(tmp, "batch.npz"), X[batch_rows(X)[0][0]], compressed=False)
            for model in MODELS:
                mem, times = {v: run_child(model, v, path, threads) for v in VARIANTS}, time_epoch(X, model, n_batches)
                enc, dec = layer_sizes(model, X.shape[1])
                rest = sum(3 * 2 * BATCH * a * b for a, b in enc[1:] + dec)  # matmul FLOPs but the first layer
                flops = {"ours": rest + 2 * 2 * X.nnz * BATCH / X.shape[0] * enc[0][1],
                         "dense": rest + 2 * 2 * BATCH * enc[0][0] * enc[0][1]}  # forward + weight gradient
                for v in VARIANTS:
                    t, d, m, md = times[v], times["dense"], mem[v], mem["dense"]
                    rows.append({"data": name, "model": model, "variant": v, "users": X.shape[0], "items": X.shape[1],
                                 "nnz": X.nnz, **t, "speedup_epoch": d["s_per_epoch"] / t["s_per_epoch"],
                                 "speedup_fwd_bwd": d["fwd_bwd_s_per_epoch"] / t["fwd_bwd_s_per_epoch"],
                                 "matmul_gflop_per_step": flops[v] / 1e9, "matmul_ms_at_rate": flops[v] / rate * 1e3,
                                 "share_of_rate": flops[v] / rate / t["fwd_bwd_s_median"], **m,
                                 "rss_ratio": md["rss_growth_mib"] / max(m["rss_growth_mib"], 1e-3),
                                 "peak_live_ratio": md["peak_live_mib"] / max(m["peak_live_mib"], 1e-3),
                                 "threads": threads, "matmul_gflops_measured": rate / 1e9})
                    print(name, model, v, f"{t['s_per_epoch']:.1f} s/epoch, {m['rss_growth_mib']:.0f} MiB RSS",
                          flush=True)
    return rows


def sanity_check(X: sp.csr_matrix) -> list[str]:
    """|Δloss| and max |Δgrad| of ours against dense per model, dropout 0, on ``X``'s first 500 rows."""
    out = []
    for model in MODELS:  # a generator each, so that the VAE's eps draws match
        nets = [build(v, model, X.shape[1], dropout=0.0) for v in VARIANTS]
        losses = [net.loss(Batch(torch.arange(BATCH), X[:BATCH], BATCH, CPU, torch.Generator().manual_seed(0)),
                           1000) for net in nets]
        grads = [torch.autograd.grad(loss, list(net.parameters())) for loss, net in zip(losses, nets)]
        dg = max(float((g0 - (g1 if g1.shape == g0.shape else g1.T)).abs().max()) for g0, g1 in zip(*grads))
        out.append(f"{model} |Δloss| {abs(losses[0].item() - losses[1].item()):.1e}, max |Δgrad| {dg:.1e}")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="ML-1M only, 4 batches (< 1 min)")
    ap.add_argument("--data", default=os.environ.get("AUTOREC_DATA"), help="folder with ml-1m.zip")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "mult_speed.md"))
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--child", nargs=3, metavar=("MODEL", "VARIANT", "BATCH_NPZ"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child_memory(*args.child), default=float))
        return
    started, load0 = time.perf_counter(), os.getloadavg()
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    rate = 2 * 2048**3 / min(timeit.repeat(lambda: torch.mm(a, b), number=1, repeat=6))  # FLOP/s
    X1 = autorec.load_movielens("ml-1m", args.data, download=False).binarize(3.5).X.tocsr()
    check = sanity_check(X1)
    datasets = [("ML-1M", X1, 4 if args.quick else 3 * len(batch_rows(X1)[0]))]
    rows = measure(datasets + ([] if args.quick else [("ML-20M-sized", ml20m_sized(), 20)]), rate, args.threads)

    cpu = next((ln.split(":", 1)[1].strip() for ln in subprocess.run(["lscpu"], capture_output=True, text=True)
                .stdout.splitlines() if ln.startswith("Model name")), platform.processor() or "unknown")
    lines = ["# Mult-VAE / Mult-DAE training speed and memory: the library vs a dense reference", "",
             f"- command: `python benchmarks/bench_mult_speed.py {' '.join(sys.argv[1:] if argv is None else argv)}`",
             f"- python {platform.python_version()}, torch {torch.__version__}, scipy {scipy.__version__}, "
             f"numpy {np.__version__}, autorec {autorec.__version__}",
             f"- CPU: {cpu}; {os.cpu_count()} cores visible, shared with other jobs; torch threads {args.threads}",
             "- load average (1/5/15 min) at start " + "/".join(f"{x:.1f}" for x in load0) + ", at end "
             + "/".join(f"{x:.1f}" for x in os.getloadavg()) + f"; total time {time.perf_counter() - started:.0f} s",
             f"- dense matmul rate measured (torch.mm 2048x2048, best of 6): {rate / 1e9:.1f} GFLOP/s",
             "- data (ML-1M binarised at > 3.5; ML-20M-sized generated): " + "; ".join(dict.fromkeys(
                 f"{r['data']} {r['users']:,} x {r['items']:,}, {r['nnz']:,} clicks" for r in rows))]
    for title, (text, cols) in TABLES.items():
        cols = [("data", "data", ""), ("model", "model", ""), ("variant", "variant", ""), *cols]
        lines += ["", f"## {title}", "", text, "", "| " + " | ".join(c[0] for c in cols) + " |",
                  "|" + "".join("---:|" if f else "---|" for *_, f in cols)]
        lines += ["| " + " | ".join(format(k(r) if callable(k) else r[k], f) for _, k, f in cols) + " |" for r in rows]
    lines += ["", "## Notes", "", "- Sanity check (ML-1M, 500 users, dropout 0), ours against dense: "
              + "; ".join(check) + ".",
              "- Before `SparseLinear` (commit ac6c7c9) the first layer ran `embedding_bag` on nn.Linear's (d, I) "
              "weight seen transposed: 47.9 vs 11.0 ms on an (I, d) table on ML-1M, 249.5 vs 58.1 ms at ML-20M "
              "size (d = 600; this benchmark's run before that commit, 1 thread, load ~6).",
              "- `--threads 1`: with other jobs on the 2 cores, 2 threads made steps 2-6x slower in a side run.", ""]
    with atomic_path(args.out) as tmp:
        Path(tmp).write_text("\n".join(lines))
    with atomic_path(Path(args.out).with_suffix(".csv")) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: round(x, 6) if isinstance(x, float) else x for k, x in r.items()} for r in rows)
    print("\n".join(lines), f"wrote {args.out} and {Path(args.out).with_suffix('.csv')}", sep="\n")


if __name__ == "__main__":
    main()
