"""The paper-table runner's plumbing (``benchmarks/paper_tables.py``), on small synthetic data.

The real runs (MovieLens, paper settings) take minutes to hours; these tests check that
the suites train what they claim, on the protocol they claim, and that the tables put the
papers' numbers beside ours and merge runs across invocations.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import paper_tables as bench  # noqa: E402
from autorec.datasets.synthetic import synthetic_ratings

TINY_RATING = {
    "i-autorec": ("i-autorec", {"hidden": 16, "epochs": 3}),
    "biased-mf": ("biased-mf", {"factors": 4, "epochs": 3}),
}


@pytest.fixture()
def R():
    return synthetic_ratings(n_users=120, n_items=90, density=0.15, seed=0)


def test_rating_suite_trains_on_full_train_part_and_records_curves(R, monkeypatch):
    monkeypatch.setattr(bench, "RATING_MODELS", TINY_RATING)
    histories = []
    rows = bench.run_rating("ml-1m", R, range(2), quick=False, log=lambda msg: None,
                            histories=histories)
    assert [(r["model"], r["seed"]) for r in rows] == [
        ("i-autorec", 0), ("biased-mf", 0), ("i-autorec", 1), ("biased-mf", 1)]
    for r in rows:
        assert r["epochs"] == 3 and 0.3 < r["rmse"] < 2.0 and 0 < r["mae"] <= r["rmse"]
    # the validation curves: first seed only, 3 epochs for each of the 2 models
    curves = pd.DataFrame(histories)
    assert set(curves["protocol"]) == {"autorec-valid"} and len(curves) == 6
    assert curves["rmse"].notna().all()
    table = bench.rating_table(pd.DataFrame(rows))
    assert "| ml-1m | i-autorec |" in table and "| 0.831 |" in table  # the paper beside ours
    assert "| 2 |" in table  # seeds


def test_seeds_change_the_split(R, monkeypatch):
    monkeypatch.setattr(bench, "RATING_MODELS", {"bias-only": ("biased-mf", {"factors": 0, "epochs": 2})})
    rows = bench.run_rating("x", R, range(2), quick=False, log=lambda msg: None)
    assert rows[0]["rmse"] != rows[1]["rmse"]


@pytest.mark.filterwarnings("ignore::autorec.split.SplitWarning")  # a few one-rating users
def test_topk_suite_picks_on_validation_and_reports_test(R, monkeypatch, tmp_path):
    grids = {"ease": ("ease", [{"l2": 1.0}, {"l2": 1e4}]), "pop": ("pop", [{}])}
    monkeypatch.setattr(bench, "TOPK_GRIDS", grids)
    logs = []
    rows = bench.run_topk("ml-100k", R, "per-user", quick=False, log=logs.append, trials_dir=tmp_path)
    assert [r["model"] for r in rows] == ["ease", "pop"]
    assert sum("valid ndcg@100" in line for line in logs) == 3  # every grid point was scored
    journal = (tmp_path / "ml-100k-per-user-ease" / "trials.jsonl").read_text().splitlines()
    assert len(journal) == 3  # autorec.tune's journal: a header and the two configurations
    again = []
    rerun = bench.run_topk("ml-100k", R, "per-user", quick=False, log=again.append, trials_dir=tmp_path)
    assert not any("valid ndcg@100" in line for line in again)  # resumed: nothing ran twice
    assert [r["ndcg@100"] for r in rerun] == [r["ndcg@100"] for r in rows]
    for r in rows:
        assert 0 <= r["recall@20"] <= 1 and r["ndcg@100_se"] > 0 and r["n_users"] > 0
    assert "| ml-100k | per-user | ease |" in bench.topk_table(pd.DataFrame(rows))


def test_merge_replaces_same_keys(tmp_path):
    path = tmp_path / "runs.csv"
    keys = ["dataset", "protocol", "model", "seed"]
    first = pd.DataFrame([{"dataset": "d", "protocol": "p", "model": m, "seed": 0, "rmse": 1.0}
                          for m in ("a", "b")])
    bench._merge(path, first, keys)
    second = pd.DataFrame([{"dataset": "d", "protocol": "p", "model": "b", "seed": 0, "rmse": 0.5}])
    merged = bench._merge(path, second, keys)
    assert sorted(zip(merged["model"], merged["rmse"])) == [("a", 1.0), ("b", 0.5)]
    assert pd.read_csv(path).shape == (2, 5)


def test_tables_name_the_earlier_commands_they_merge():
    runs = pd.DataFrame([{"model": "a", "command": "autorec benchmark --models a", "run_at": "t1"},
                         {"model": "b", "command": "autorec benchmark --models b", "run_at": "t2"}])
    text = bench._earlier_runs(runs, "autorec benchmark --models b")
    assert "`autorec benchmark --models a` (t1): a" in text and "--models b" not in text
    assert bench._earlier_runs(runs.drop(columns="command"), "x") == ""
