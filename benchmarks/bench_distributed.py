"""Data-parallel training: 1 vs 2 processes on this machine, and the bytes a step all-reduces
at ML-20M / Netflix size.

Part 1, measured. I-AutoRec (the library defaults: hidden 500, batch 256 items) on the
AutoRec protocol's training part of ML-1M (90% of the ratings) and Mult-VAE (600-200,
batch 500 users) on ML-1M's clicks (ratings >= 4), trained ``--epochs`` epochs in each of
these configurations, interleaved, ``--repeats`` times:

* 1 process, 2 threads (what one process does on this machine);
* 1 process, 1 thread;
* 2 processes x 1 thread (``torchrun --standalone --nproc-per-node 2``, gloo on CPU);
* the same with DistributedDataParallel's search for unused parameters off (the Trainer
  searches by default, see ``autorec/train.py``).

Seconds per epoch are the median over the epochs after the first (the first builds caches);
the weights after the last epoch are compared with the 1-process, 2-thread run.

Part 2, computed. DistributedDataParallel all-reduces every gradient of every step, dense:
``sum(numel) x 4`` bytes for float32, whatever the batch. The parameter counts come from the
library's own networks built on the ``meta`` device (no memory), at the sizes of ML-20M and
Netflix (the raw rating matrices for the rating models; the clicks >= 4 kept by Liang et al.
2018 for the ranking models), with the library's default hyperparameters. A ring all-reduce
makes each rank send and receive ``2 (N - 1) / N`` times those bytes; the table gives the
seconds per step that takes at 10, 25 and 100 Gb/s (bandwidth only, no latency, no overlap
with the backward pass, which DDP does bucket by bucket).

Run: ``python benchmarks/bench_distributed.py [--epochs 5] [--repeats 2] [--out FILE]``
(needs ml-1m.zip in ``$AUTOREC_DATA``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _env import RESULTS, environment  # noqa: E402

MODELS = ("i-autorec", "mult-vae")
CONFIGS = {  # name -> (processes, threads per process, DDP searches unused parameters)
    "1 process x 2 threads": (1, 2, True),
    "1 process x 1 thread": (1, 1, True),
    "2 processes x 1 thread": (2, 1, True),
    "2 processes x 1 thread, no unused-parameter search": (2, 1, False),
}
BANDWIDTHS_GBIT = (10, 25, 100)

#: (name, users, items) of the rating matrices, and of the clicks >= 4 Mult-VAE keeps
#: (Liang et al. 2018, table 1: users with at least 5 such clicks)
SHAPES = {
    "ML-20M": {"ratings": (138_493, 26_744), "clicks": (136_677, 20_108)},
    "Netflix": {"ratings": (480_189, 17_770), "clicks": (463_435, 17_769)},
}


# ------------------------------------------------------------------- children
def child(model_name: str, epochs: int, out: Path) -> None:
    """Train on ML-1M (one rank of a torchrun job, or alone); rank 0 writes the result."""
    import torch

    import autorec
    from autorec import distributed

    R = autorec.load_movielens("ml-1m", os.environ.get("AUTOREC_DATA"), download=False)
    cls = autorec.MODELS[model_name]
    if os.environ.get("BENCH_NO_UNUSED_SEARCH"):
        from autorec.models.autorec import AutoRecNet
        from autorec.models.mult import _MultNetwork

        AutoRecNet.ddp_find_unused_parameters = _MultNetwork.ddp_find_unused_parameters = False
    if model_name == "i-autorec":
        train = autorec.split.holdout(R, test_size=0.1, seed=0)[0]
    else:
        train = R.binarize(4)
    model = cls(epochs=epochs, seed=0, device="cpu", progress=False)
    start = time.perf_counter()
    model.fit(train)
    wall = time.perf_counter() - start
    here = distributed.world()
    if here.main:
        torch.save({k: v.clone() for k, v in model.network_.state_dict().items()}, out.with_suffix(".pt"))
        out.write_text(json.dumps({"world": here.size, "threads": torch.get_num_threads(), "fit_s": wall,
                                   "epoch_s": [h["seconds"] for h in model.history_],
                                   "loss": [h["loss"] for h in model.history_]}))


def run_config(model_name: str, config: str, epochs: int, work: Path, tag: str) -> dict:
    procs, threads, search = CONFIGS[config]
    out = work / f"{model_name}-{tag}.json"
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONPATH=str(ROOT), GLOO_SOCKET_IFNAME="lo")
    if not search:
        env["BENCH_NO_UNUSED_SEARCH"] = "1"
    script = [str(Path(__file__).resolve()), "--child", model_name, "--epochs", str(epochs),
              "--child-out", str(out)]
    if procs == 1:
        cmd = [sys.executable, *script]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={procs}", *script]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{model_name} / {config} failed:\n{done.stderr[-3000:]}")
    return {**json.loads(out.read_text()), "weights": str(out.with_suffix(".pt"))}


# ------------------------------------------------------------------ part 2
def gradient_sizes() -> list[dict]:
    """Parameters (float32 gradients) of each network at ML-20M / Netflix size."""
    import torch

    from autorec.models.autorec import AutoRecNet
    from autorec.models.biased_mf import _BiasedMFNetwork
    from autorec.models.cdae import _CDAENetwork
    from autorec.models.mult import _MultNetwork

    rows = []
    for data, shape in SHAPES.items():
        (ru, ri), (cu, ci) = shape["ratings"], shape["clicks"]
        nets = {  # name -> (network, training rows, batch size): library defaults
            "I-AutoRec": (lambda: AutoRecNet(ru, 500), ri, 256),
            "U-AutoRec": (lambda: AutoRecNet(ri, 500), ru, 256),
            "BiasedMF": (lambda: _BiasedMFNetwork(ru, ri, 100, 0.07, 3.5), ru, 256),
            "CDAE": (lambda: _CDAENetwork(cu, ci, 50, 0.2, "sigmoid", "bce", None, 0.01), cu, 256),
            "Mult-DAE": (lambda: _MultNetwork(ci, (200,), False, 0.5, 0.01, 0, 0.0), cu, 500),
            "Mult-VAE": (lambda: _MultNetwork(ci, (600, 200), True, 0.5, 0.0, 200_000, 0.2), cu, 500),
        }
        for name, (build, n_rows, batch) in nets.items():
            with torch.device("meta"):
                net = build()
            numel = sum(p.numel() for p in net.parameters() if p.requires_grad)
            rows.append({"data": data, "model": name, "params": numel, "bytes": 4 * numel,
                         "steps": math.ceil(n_rows / batch), "batch": batch,
                         "shape": shape["ratings"] if name in ("I-AutoRec", "U-AutoRec", "BiasedMF")
                         else shape["clicks"]})
    return rows


def ring_seconds(nbytes: int, ranks: int, gbit: float) -> float:
    """Bandwidth time of a ring all-reduce of ``nbytes`` over ``ranks`` at ``gbit`` Gb/s."""
    return 2 * (ranks - 1) / ranks * nbytes / (gbit * 1e9 / 8)


# ------------------------------------------------------------------- report
def report(runs: dict, agree: dict, sizes: list[dict], args, header: str, load_end: float) -> str:
    lines = ["# Data-parallel training: 1 vs 2 processes, and all-reduced bytes at scale", "",
             header, "",
             f"**This machine has 2 CPU cores, shared with other jobs** (1-minute load average "
             f"{load_end:.1f} at the end of the run): two processes of one thread each use the same "
             "two cores as one process of two threads, so these rows measure what data parallelism "
             "costs or saves here, not the speed-up of ranks with cores, GPUs or machines of their "
             "own. Each rank computes half of each batch, but every step adds DDP's all-reduce of "
             "every gradient and of the loss, and each rank still writes full-size weight "
             "gradients and runs Adam over all the weights (data parallelism splits the batch, not "
             "the weights). When other jobs load the cores, a process of 2 OpenMP threads can be "
             "slower than one thread (its threads wait for each other), so both 1-process rows "
             "are given.", "",
             f"## Part 1: seconds per epoch on ML-1M (median of epochs 2-{args.epochs}, best of "
             f"{args.repeats} runs; runs interleaved)", "",
             "| model | configuration | s/epoch | all runs | vs 1 process x 1 thread | "
             "vs 1 process x 2 threads | "
             "max abs weight diff vs 1 process x 2 threads | max rel. loss diff (per epoch) |",
             "|---|---|---:|---|---:|---:|---:|---:|"]
    for model in MODELS:
        best = {c: min(statistics.median(r["epoch_s"][1:]) for r in runs[model][c]) for c in CONFIGS}
        one, two = best["1 process x 1 thread"], best["1 process x 2 threads"]
        for config in CONFIGS:
            per_run = [statistics.median(r["epoch_s"][1:]) for r in runs[model][config]]
            lines.append(f"| {model} | {config} | {best[config]:.3f} | {', '.join(f'{x:.3f}' for x in per_run)} | "
                         f"{best[config] / one:.2f}x | {best[config] / two:.2f}x | {agree[model][config][0]:.1e} | "
                         f"{agree[model][config][1]:.1e} |")
    iar_mb = 4 * (2 * 6_040 * 500 + 6_040 + 500) / 1e6  # I-AutoRec on ML-1M: V, W, b, mu
    lines += ["", "Ratios above 1 are slower. `no unused-parameter search`: DistributedDataParallel "
              "told that every parameter gets a gradient in every step (true of these two "
              "networks); the Trainer's default searches, which lets networks that train parts of "
              "themselves in turns work unchanged, at the price of a small all-reduce of flags per "
              "step (the two rows of each model show what it costs here). A network opts out with "
              "`ddp_find_unused_parameters = False`.", "",
              f"Much of I-AutoRec's sparse step is weight-sized work that no route avoids "
              f"(`autorec_speed.md`): the dense gradients of V and W with their L2 term, and Adam "
              f"over them. With 2 ranks each rank still does all of it and all-reduces "
              f"{iar_mb:.0f} MB of gradients per step on top, so halving its batch does not pay "
              "here. Mult-VAE's step is mostly its per-user decoder and softmax (`mult_speed.md`), "
              "which the ranks split.", ""]
    lines += ["Weights: every configuration starts from the same seeded weights and draws the same "
              "shuffles, dropout and noise (`autorec/train.py`); the differences are float rounding "
              "(threads and ranks sum in other orders) grown over "
              f"{args.epochs} epochs of Adam, whose first steps move a weight by about lr whatever the "
              "size of its gradient: a weight whose gradient is at rounding level moves in the "
              "direction the rounding picks. On the tests' tiny data "
              "the weights agree to 1e-7 (`tests/test_distributed.py`).", ""]
    lines += ["## Part 2: bytes all-reduced per step (DDP, float32 gradients, every parameter)", "",
              "Library defaults: AutoRec hidden 500 and batch 256 rows (I-AutoRec's rows are items: "
              "its weights are users x 500, twice); BiasedMF 100 factors, batch 256 users; CDAE 50 "
              "units with a user embedding, batch 256; Mult-DAE 200, Mult-VAE 600-200, batch 500. "
              "Seconds are the bandwidth time of one ring all-reduce per step, "
              "`2 (N-1)/N x bytes / bandwidth`, for N = 2 and N = 8 ranks.", "",
              "| data | model | users x items | parameters | MB per step | steps per epoch | "
              "GB per epoch | " + " | ".join(f"{b} Gb/s N=2 / N=8 (s/step)" for b in BANDWIDTHS_GBIT) + " |",
              "|---|---|---|---:|---:|---:|---:|" + "---:|" * len(BANDWIDTHS_GBIT)]
    for r in sizes:
        cells = " | ".join(f"{ring_seconds(r['bytes'], 2, b):.3f} / {ring_seconds(r['bytes'], 8, b):.3f}"
                           for b in BANDWIDTHS_GBIT)
        lines.append(f"| {r['data']} | {r['model']} | {r['shape'][0]:,} x {r['shape'][1]:,} | "
                     f"{r['params']:,} | {r['bytes'] / 1e6:,.0f} | {r['steps']:,} | "
                     f"{r['bytes'] * r['steps'] / 1e9:,.0f} | {cells} |")
    by = {(r["data"], r["model"]): r for r in sizes}

    def mb(data, model):
        return by[(data, model)]["bytes"] / 1e6

    def secs(data, model, gbit, ranks=8):
        return ring_seconds(by[(data, model)]["bytes"], ranks, gbit)

    # measured elsewhere in this repository: seconds of one training step on one CPU process
    vae_step, vae_bytes = 0.61, by[("ML-20M", "Mult-VAE")]["bytes"]  # mult_speed.md, ML-20M size
    iar_step, iar_bytes = 0.236, 4 * (2 * 69_878 * 500 + 69_878 + 500)  # autorec_speed.md, ML-10M size

    def speedup(step, nbytes, ranks, gbit):
        return step / (step / ranks + ring_seconds(nbytes, ranks, gbit))

    lines += ["", "What it means. With N ranks and no overlap, a step takes about its compute / N plus "
              "the all-reduce, so the speed-up over one process is `t / (t/N + all-reduce)` (DDP "
              "overlaps part of the all-reduce with the backward pass, bucket by bucket, so this is "
              "a lower bound). With step times measured in this repository on one CPU process:", "",
              f"- Mult-VAE at ML-20M size, {vae_step} s per step (`mult_speed.md`), "
              f"{mb('ML-20M', 'Mult-VAE'):.0f} MB per step: 8 ranks give "
              + ", ".join(f"{speedup(vae_step, vae_bytes, 8, g):.1f}x at {g} Gb/s" for g in BANDWIDTHS_GBIT)
              + f"; 2 ranks {speedup(vae_step, vae_bytes, 2, 10):.1f}x at 10 Gb/s. Mult-DAE "
              f"({mb('ML-20M', 'Mult-DAE'):.0f} MB) and CDAE ({mb('ML-20M', 'CDAE'):.0f} MB) carry less.",
              f"- I-AutoRec at ML-10M size, {iar_step} s per step (`autorec_speed.md`), "
              f"{iar_bytes / 1e6:.0f} MB per step (its weights are users x 500, twice): 8 ranks give "
              + ", ".join(f"{speedup(iar_step, iar_bytes, 8, g):.2f}x at {g} Gb/s" for g in BANDWIDTHS_GBIT)
              + f". Its gradients grow with the other side of the matrix: "
              f"{mb('ML-20M', 'I-AutoRec') / 1e3:.2f} GB per step at ML-20M, "
              f"{mb('Netflix', 'I-AutoRec') / 1e3:.2f} GB at Netflix ({secs('Netflix', 'I-AutoRec', 10):.1f} s "
              f"per step at 10 Gb/s with 8 ranks). Across machines I-AutoRec needs 100 Gb/s-class "
              f"links or GPUs in one machine; U-AutoRec (items x 500 x 2: {mb('ML-20M', 'U-AutoRec'):.0f} "
              f"/ {mb('Netflix', 'U-AutoRec'):.0f} MB) is the AutoRec that scales out.",
              f"- BiasedMF and CDAE carry a per-user table (users x 100, users x 50) whose gradient "
              f"DDP all-reduces dense although a batch touches 256 users: {mb('Netflix', 'BiasedMF'):.0f} "
              f"MB (BiasedMF) and {mb('Netflix', 'CDAE'):.0f} MB (CDAE) per step at Netflix size for "
              "a few hundred rows of real gradient. Sparse gradients for those tables would cut "
              "that by orders of magnitude; they are not implemented.", ""]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path(RESULTS) / "distributed.md")
    p.add_argument("--child", choices=MODELS, help=argparse.SUPPRESS)
    p.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child, args.epochs, args.child_out)
        return 0
    import torch

    command = "python benchmarks/bench_distributed.py " + " ".join(argv or sys.argv[1:])
    header = environment(command.strip())
    runs = {m: {c: [] for c in CONFIGS} for m in MODELS}
    with tempfile.TemporaryDirectory(prefix="bench_distributed_") as tmp:
        work = Path(tmp)
        for rep in range(args.repeats):
            for model in MODELS:
                for i, config in enumerate(CONFIGS):
                    result = run_config(model, config, args.epochs, work, f"{rep}-{i}")
                    runs[model][config].append(result)
                    print(model, config, [round(s, 3) for s in result["epoch_s"]], file=sys.stderr, flush=True)
        agree = {}  # (weights, losses) of each configuration's first run against the reference's
        for model in MODELS:
            first = runs[model]["1 process x 2 threads"][0]
            ref = torch.load(first["weights"], weights_only=True)
            agree[model] = {}
            for config in CONFIGS:
                run = runs[model][config][0]
                w = torch.load(run["weights"], weights_only=True)
                agree[model][config] = (
                    max(float((w[k] - ref[k]).abs().max()) for k in ref),
                    max(abs(a - b) / abs(b) for a, b in zip(run["loss"], first["loss"])))
    text = report(runs, agree, gradient_sizes(), args, header, os.getloadavg()[0])
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
