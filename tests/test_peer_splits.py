"""The peer benchmark's split files (``benchmarks/peers/splits.py``): what every side reads.

The side-by-side runs themselves need the peers' venvs and minutes (``run_peers.py``, not
in the test suite); this checks that the files hold exactly our split, in both formats.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "peers"))
import splits  # noqa: E402
from autorec.datasets.synthetic import synthetic_ratings


def _pairs(frame, user="user", item="item"):
    return set(zip(frame[user].astype(str), frame[item].astype(str)))


def test_split_files_hold_the_split_in_both_formats(tmp_path):
    R = synthetic_ratings(n_users=80, n_items=60, density=0.2, seed=0)
    counts = splits.write_splits(R, tmp_path)
    assert counts["rating"]["train"] + counts["rating"]["test"] == R.nnz
    rating = splits.read_parts(tmp_path / "rating", ("train", "test"))
    whole = R.to_frame().astype({"user": str, "item": str})
    both = pd.concat([rating["train"].to_frame(), rating["test"].to_frame()]).astype(
        {"user": str, "item": str})
    assert _pairs(both) == _pairs(whole) and len(both) == R.nnz  # disjoint, complete
    assert rating["train"].items.equals(rating["test"].items)  # one vocabulary
    merged = both.merge(whole, on=["user", "item"], suffixes=("", "_R"))
    np.testing.assert_array_equal(merged["rating"], merged["rating_R"])  # ratings kept

    clicks = R.binarize(4).to_frame()
    parts = {n: pd.read_csv(tmp_path / "topk" / f"{n}.tsv", sep="\t", dtype=str)
             for n in ("train", "valid", "test")}
    assert sum(len(p) for p in parts.values()) == len(clicks)
    assert set().union(*(_pairs(p) for p in parts.values())) == _pairs(clicks)
    assert {n: len(p) for n, p in parts.items()} == counts["topk"]
    for name, part in parts.items():  # RecBole's atomic file: the same rows, typed header
        atomic = pd.read_csv(tmp_path / "topk" / "recbole" / "ml100k" / f"ml100k.{name}.inter",
                             sep="\t", dtype=str)
        assert list(atomic.columns) == ["user_id:token", "item_id:token"]
        assert _pairs(atomic, "user_id:token", "item_id:token") == _pairs(part)
    test_users = set(parts["test"].user)
    assert test_users <= set(parts["train"].user)  # per-user: every test user has history
