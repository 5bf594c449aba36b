"""PNG plots of the committed benchmark results: learning curves and training speed.

    python benchmarks/plots.py [--results benchmarks/results]

Reads ``histories.csv`` (written by ``benchmarks/paper_tables.py``: one row per epoch of every
model it trained) and ``autorec_speed.csv`` (written by ``benchmarks/bench_autorec_speed.py``)
and writes ``learning_curves.png`` and ``autorec_speed.png`` next to them. Plots only
what those files hold: a missing file or model is left out, never invented.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from autorec._io import atomic_path  # noqa: E402
from paper_tables import PAPER_RMSE  # noqa: E402


def _save(fig, out: Path) -> bool:
    """Write ``fig`` to ``out`` atomically (temp file + rename) and close it."""
    fig.tight_layout()
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return True


def learning_curves(histories: pd.DataFrame, out: Path, dataset: str = "ml-1m") -> bool:
    """Validation RMSE (rating models) and validation NDCG@100 (top-k) against epochs."""
    rating = histories[(histories["dataset"] == dataset) & (histories["protocol"] == "autorec-valid")]
    topk = histories[(histories["dataset"] == dataset) & (histories["protocol"] == "strong")]
    if "ndcg@100" in topk:
        topk = topk[topk["ndcg@100"].notna()]
    if rating.empty and topk.empty:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    papers = []
    for model, g in rating.groupby("model", sort=False):
        line, = left.plot(g["epoch"], g["rmse"], label=model)
        paper = PAPER_RMSE.get(dataset, {}).get(model)
        if paper:
            left.axhline(paper, color=line.get_color(), linestyle=":", linewidth=1)
            papers.append(paper)
    left.set(title=f"{dataset}, AutoRec protocol: validation RMSE (dotted: paper's test RMSE)",
             xlabel="epoch", ylabel="RMSE")
    if not rating.empty:
        left.set_ylim(min([rating["rmse"].min(), *papers]) - 0.01, min(rating["rmse"].max(), 1.0))
        left.legend()
    for model, g in topk.groupby("model", sort=False):
        right.plot(g["epoch"], g["ndcg@100"], label=model)
    right.set(title=f"{dataset}, strong generalization: validation NDCG@100", xlabel="epoch",
              ylabel="NDCG@100")
    if not topk.empty:
        right.legend()
    return _save(fig, out)


def speed(table: pd.DataFrame, out: Path) -> bool:
    """Seconds per training epoch of every AutoRec route, one group of bars per case."""
    if table.empty:
        return False
    cases = list(dict.fromkeys(zip(table["data"], table["model"])))
    routes = list(dict.fromkeys(table["route"]))
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(routes)
    for j, route in enumerate(routes):
        sub = table[table["route"] == route].set_index(["data", "model"])
        values = [sub.loc[c, "s_per_epoch"] if c in sub.index else float("nan") for c in cases]
        ax.bar([i + j * width for i in range(len(cases))], values, width, label=route)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(cases))],
                  [f"{model}\n{data}" for data, model in cases])
    ax.set(yscale="log", ylabel="seconds per epoch (log)",
           title="AutoRec training: seconds per epoch by route (lower is better)")
    ax.legend()
    return _save(fig, out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    results = Path(args.results)
    wrote = []
    if (results / "histories.csv").exists():
        if learning_curves(pd.read_csv(results / "histories.csv"), results / "learning_curves.png"):
            wrote.append("learning_curves.png")
    if (results / "autorec_speed.csv").exists():
        if speed(pd.read_csv(results / "autorec_speed.csv"), results / "autorec_speed.png"):
            wrote.append("autorec_speed.png")
    print("wrote " + (", ".join(wrote) if wrote else "nothing (no results files)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
