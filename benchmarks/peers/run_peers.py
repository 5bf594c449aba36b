"""Side-by-side runs of autorec and the peers users would pick instead, same split files,
same machine, same run; writes ``benchmarks/results/peers.md`` and ``peers.jsonl``.

    bash benchmarks/peers/make_venvs.sh          # once: Surprise and RecBole venvs
    nice -n 10 python benchmarks/peers/run_peers.py [--only rating|topk] [--rows NAME ...]

Every row is a pair run back to back, each side in its own process (one process per model,
so the peak RSS is that model's; each in its own venv), one thread each
(``OMP_NUM_THREADS=1``); the machine's load average is recorded before each pair. The
splits (``splits.py``) are written once from ML-100K (``$AUTOREC_DATA``) and read by both
sides. Not part of the test suite (minutes, and the peers' venvs): tests cover the split
writer only.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from _env import RESULTS, environment  # noqa: E402

VENVS = HERE / ".venvs"
OURS = sys.executable

#: (row name, task, (ours: model, params), (peer: side, model, params), note)
ROWS = [
    ("biased-svd-equal", "rating",
     ("biased-mf", {"solver": "adam"}),
     ("Surprise", "svd", {"n_factors": 100, "n_epochs": 50}),
     "100 factors, 50 epochs both; each side's default lr and regularisation"),
    ("biased-svd-als", "rating",
     ("biased-mf", {"solver": "als", "l2": 0.1, "epochs": 10}),
     ("Surprise", "svd", {"n_factors": 100, "n_epochs": 50, "lr_all": 0.01, "reg_all": 0.1}),
     "100 factors; ours 10 ALS sweeps; Surprise 50 epochs, lr 0.01 / reg 0.1 (best of 3 settings "
     "scored on the test split: in Surprise's favour)"),
    ("svdpp", "rating",
     ("biased-mf", {"solver": "als", "l2": 0.1, "epochs": 10, "factors": 20}),
     ("Surprise", "svdpp", {"n_factors": 20, "n_epochs": 20}),
     "20 factors; SVD++ capped at its defaults (20 epochs), it is slow; ours is biased MF (no "
     "implicit term), 10 ALS sweeps"),
    ("mult-vae", "topk", ("mult-vae", {"epochs": 100, "patience": 10}),
     ("RecBole", "MultiVAE", {"epochs": 100, "stopping_step": 10}), "≤ 100 epochs, patience 10; each side's defaults"),
    ("mult-dae", "topk", ("mult-dae", {"epochs": 100, "patience": 10}),
     ("RecBole", "MultiDAE", {"epochs": 100, "stopping_step": 10}), "≤ 100 epochs, patience 10; each side's defaults"),
    ("cdae", "topk", ("cdae", {"epochs": 100, "patience": 10}),
     ("RecBole", "CDAE", {"epochs": 100, "stopping_step": 10}), "≤ 100 epochs, patience 10; each side's defaults"),
    ("recvae", "topk", ("mult-vae", {"epochs": 100, "patience": 10}),
     ("RecBole", "RecVAE", {"epochs": 100, "stopping_step": 10}),
     "autorec has no RecVAE: our Mult-VAE beside it; ≤ 100 epochs, patience 10"),
    ("ease", "topk", ("ease", {}), ("RecBole", "EASE", {}), "each side's default λ (ours 500, RecBole 250)"),
    ("als", "topk", ("als", {"factors": 100}), ("implicit", "implicit-als", {"factors": 100}),
     "100 factors, implicit's defaults otherwise; ours wraps implicit"),
    ("bpr", "topk", ("bpr", {"factors": 100}), ("implicit", "implicit-bpr", {"factors": 100}),
     "100 factors; ours wraps implicit"),
]


def _command(task: str, split: Path, side: str, model: str, params: dict) -> list[str]:
    folder = str(split / task)
    if side == "autorec" or side == "implicit":
        return [OURS, str(HERE / "run_ours.py"), folder, task, model, json.dumps(params)]
    venv = {"Surprise": "surprise", "RecBole": "recbole"}[side]
    script = {"Surprise": "run_surprise.py", "RecBole": "run_recbole.py"}[side]
    return [str(VENVS / venv / "bin" / "python"), str(HERE / script), folder, model, json.dumps(params)]


def _run(cmd: list[str], timeout: float) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT)}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}"}
    return json.loads(lines[-1])


def _fmt(v, digits=2):
    return "—" if v is None else f"{v:.{digits}f}"


def _ratio(ours, peer):
    if ours is None or peer is None or ours <= 0:
        return "—"
    return f"{peer / ours:.2f}"


def render(rows: list[dict], command: str) -> str:
    out = ["# autorec beside the peers, same splits, same machine, same run\n",
           environment(command),
           "Each row: our model and the peer, back to back in one run, each in its own process "
           "and venv (`benchmarks/peers/make_venvs.sh`), one thread each, `nice -n 10` on a "
           "2-core machine shared with other jobs (load = 1-minute load average before the "
           "pair). Splits written once by `benchmarks/peers/splits.py` and read by both sides. "
           "fit s: wall time of the fit (per-epoch validation included; reading files, imports "
           "and RecBole's dataset build not included). to best: wall time from the start of "
           "the fit to the validation of the epoch that was kept. RSS: peak resident set of "
           "the process (imports and data included). **×: peer / ours** (above 1: ours is "
           "faster or smaller).\n"]
    for task, title, metric in (("rating", "ML-100K ratings, random 90/10 (test RMSE, lower is better; "
                                 "our per-epoch validation is the test split, so `to best` is the "
                                 "time to the best test RMSE; Surprise has no per-epoch evaluation)", "rmse"),
                                ("topk", "ML-100K ratings >= 4 as clicks, per-user 80/20, 10 % of each "
                                 "user's train carved for validation (test NDCG@100 of the kept "
                                 "model, higher is better, train + valid excluded; one scorer, "
                                 "`common.ndcg_at_k`, for both sides)", "ndcg@100")):
        these = [r for r in rows if r["task"] == task]
        if not these:
            continue
        out.append(f"## {title}\n")
        out.append("| row | load | ours | fit s | to best s (epoch) | quality | RSS MB | peer | fit s "
                   "| to best s (epoch) | quality | RSS MB | × fit | × to best | × RSS | settings |")
        out.append("|---|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in these:
            o, p = r["ours"], r["peer"]
            cells = [r["row"], _fmt(r["load"])]
            for side in (o, p):
                if "error" in side:
                    cells += [f"{side.get('model', '?')}: {side['error']}", "", "", "", ""]
                    continue
                best = (f"{_fmt(side.get('to_best_s'))} ({side['best_epoch']})"
                        if side.get("to_best_s") is not None else "—")
                cells += [f"{side['side']} {side['model']}", _fmt(side["fit_s"]), best,
                          _fmt(side.get(metric), 4), f"{side['peak_rss_mb']:.0f}"]
            ok = "error" not in o and "error" not in p
            cells += [_ratio(o.get("fit_s"), p.get("fit_s")) if ok else "—",
                      _ratio(o.get("to_best_s"), p.get("to_best_s")) if ok else "—",
                      _ratio(o.get("peak_rss_mb"), p.get("peak_rss_mb")) if ok else "—", r["note"]]
            out.append("| " + " | ".join(str(c) for c in cells) + " |")
        out.append("")
    return "\n".join(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("rating", "topk"))
    ap.add_argument("--rows", nargs="*", help="row names (default: all)")
    ap.add_argument("--split-dir", type=Path, default=HERE / ".data")
    ap.add_argument("--out", type=Path, default=Path(RESULTS) / "peers.md")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--render", nargs="+", type=Path, metavar="LOG",
                    help="only write the results from the row lines of earlier runs' output")
    ap.add_argument("--command", default=None, help="the command to name in the header (with --render)")
    args = ap.parse_args(argv)
    if args.render:
        rows = [json.loads(ln) for log in args.render for ln in log.read_text().splitlines()
                if ln.startswith('{"row"')]
        _write(args.out, rows, args.command or "see below")
        return
    import autorec
    import splits

    counts = splits.write_splits(autorec.load_movielens("ml-100k"), args.split_dir)
    print("splits:", counts, flush=True)
    results = []
    for name, task, (model, params), (side, peer_model, peer_params), note in ROWS:
        if (args.only and task != args.only) or (args.rows and name not in args.rows):
            continue
        load = os.getloadavg()[0]
        ours = _run(_command(task, args.split_dir, "autorec", model, params), args.timeout)
        ours.setdefault("model", model)
        peer = _run(_command(task, args.split_dir, side, peer_model, peer_params), args.timeout)
        peer.setdefault("model", peer_model)
        row = {"row": name, "task": task, "load": load, "note": note, "ours": ours, "peer": peer}
        print(json.dumps(row), flush=True)
        results.append(row)
        command = "nice -n 10 python benchmarks/peers/run_peers.py " + " ".join(argv or sys.argv[1:])
        _write(args.out, results, command.strip())  # after every row: a partial run still reports


def _write(out: Path, rows: list[dict], command: str) -> None:
    from autorec._io import atomic_path

    with atomic_path(out) as tmp:
        Path(tmp).write_text(render(rows, command) + "\n")
    with atomic_path(out.with_suffix(".jsonl")) as tmp:
        Path(tmp).write_text("".join(json.dumps(r) + "\n" for r in rows))
    print("wrote", out, flush=True)


if __name__ == "__main__":
    main()
