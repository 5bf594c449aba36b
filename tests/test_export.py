"""export_topk: formats, raw ids, seen items, padding, sharding, atomic writes."""
from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from autorec.exceptions import NotFittedForUser
from autorec.models.base import BaseRecommender
from autorec.data import RatingMatrix
from autorec.export import export_topk, shard_bounds, shard_path

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


class DotModel(BaseRecommender):
    """Random factors; new users folded in as the mean of their items' factors."""

    def __init__(self, factors: int = 4, seed: int = 0, nan: bool = False):
        self.factors, self.seed, self.nan = factors, seed, nan

    def fit(self, train, valid=None):
        self._init_fit(train)
        rng = np.random.default_rng(self.seed)
        self.U_ = rng.normal(size=(train.n_users, self.factors)).astype(np.float32)
        self.V_ = rng.normal(size=(train.n_items, self.factors)).astype(np.float32)
        self.max_batch_ = 0
        return self

    def score(self, users, X):
        self.max_batch_ = max(self.max_batch_, len(users))
        counts = np.maximum(np.asarray(X.sum(axis=1)).ravel(), 1)[:, None]
        U = np.asarray(X @ self.V_) / counts  # fold-in
        known = ~self._is_new(users.copy())
        U[known] = self.U_[users[known]]
        out = torch.from_numpy((U @ self.V_.T).astype(np.float32))
        if self.nan:
            out[:, 0] = float("nan")
        return out


class KnownOnlyModel(DotModel):
    folds_in = False


@pytest.fixture
def data():
    """40 users with string ids x 30 items with integer ids, random histories."""
    rng = np.random.default_rng(1)
    X = sp.random(40, 30, density=0.2, random_state=np.random.RandomState(2), format="lil")
    X[3] = 1.0  # user u3 has seen every item but two
    X[3, 7] = 0
    X[3, 11] = 0
    X = X.tocsr()
    X.eliminate_zeros()
    X.data[:] = rng.integers(1, 6, size=X.nnz)
    users = pd.Index([f"u{i}" for i in range(40)])
    items = pd.Index(np.arange(100, 130))
    info = pd.DataFrame({"title": [f"Movie, {i} \"x\"" for i in range(100, 130)]}, index=items)
    return RatingMatrix(sp.csr_matrix(X), users, items, item_info=info)


@pytest.fixture
def model(data):
    return DotModel().fit(data)


def read_csv(path):
    return pd.read_csv(path, dtype={"user": str})


def test_csv_schema_raw_ids_ranks_and_no_seen_items(model, data, tmp_path):
    out = export_topk(model, data, tmp_path / "recs.csv", k=5, progress=False)
    assert out == tmp_path / "recs.csv"
    df = read_csv(out)
    assert list(df.columns) == ["user", "item", "rank", "score"]
    assert df["user"].unique().tolist() == list(data.users)  # all users, in order
    sizes = df.groupby("user", sort=False).size()
    assert sizes["u3"] == 2 and (sizes.drop("u3") == 5).all()  # padding dropped
    assert set(df["item"]) <= set(data.items)
    ranks = df.groupby("user", sort=False)["rank"].apply(list)
    assert ranks.map(lambda r: r == list(range(1, len(r) + 1))).all()
    seen = data.to_frame()
    assert len(df.merge(seen, on=["user", "item"])) == 0
    # identical to the one top-k path
    idx, scores = model.recommend(np.arange(data.n_users), data.X, k=5)
    first = df[df["user"] == "u0"]
    assert first["item"].tolist() == data.items[idx[0]].tolist()
    np.testing.assert_array_equal(first["score"].to_numpy(np.float32), scores[0])


def test_formats_agree(model, data, tmp_path):
    csv = read_csv(export_topk(model, data, tmp_path / "r.csv", k=4, progress=False))
    par = pq.read_table(export_topk(model, data, tmp_path / "r.parquet", k=4, progress=False)).to_pandas()
    assert par["score"].dtype == np.float32 and par["item"].dtype == np.int64
    pd.testing.assert_frame_equal(csv.astype({"score": np.float32, "rank": np.int32}), par)
    with gzip.open(export_topk(model, data, tmp_path / "r.csv.gz", k=4, progress=False), "rt") as fh:
        assert fh.read() == (tmp_path / "r.csv").read_text()
    lines = (export_topk(model, data, tmp_path / "r.jsonl", k=4, progress=False)).read_text().splitlines()
    assert len(lines) == data.n_users
    rows = [json.loads(line) for line in lines]
    flat = pd.DataFrame([(r["user"], i, s) for r in rows for i, s in zip(r["items"], r["scores"])],
                        columns=["user", "item", "score"])
    pd.testing.assert_frame_equal(flat, csv[["user", "item", "score"]])
    assert rows[3]["user"] == "u3" and len(rows[3]["items"]) == 2


def test_titles(model, data, tmp_path):
    df = read_csv(export_topk(model, data, tmp_path / "t.csv", k=3, item_titles=True, progress=False))
    assert list(df.columns) == ["user", "item", "rank", "score", "title"]
    assert (df["title"] == df["item"].map(lambda i: f"Movie, {i} \"x\"")).all()
    row = json.loads((export_topk(model, data, tmp_path / "t.jsonl", k=3, item_titles=True,
                                  progress=False)).read_text().splitlines()[0])
    assert row["titles"] == [f"Movie, {i} \"x\"" for i in row["items"]]
    bare = data.replace(data.X)
    object.__setattr__(bare, "item_info", None)
    with pytest.raises(ValueError, match="title"):
        export_topk(model, bare, tmp_path / "t2.csv", item_titles=True, progress=False)


@pytest.mark.parametrize("num_shards", [2, 3, 7, 20])
def test_sharded_csv_concatenates_to_single_output(model, data, tmp_path, num_shards):
    single = export_topk(model, data, tmp_path / "all.csv", k=6, batch_size=4, progress=False)
    parts = [export_topk(model, data, tmp_path / "recs.csv", k=6, batch_size=4, num_shards=num_shards,
                         shard=i, progress=False) for i in range(num_shards)]
    assert parts[1].name == f"recs-part-00001-of-{num_shards:05d}.csv"
    assert b"".join(p.read_bytes() for p in parts) == single.read_bytes()


def test_sharded_parquet_reads_back_as_single_output(model, data, tmp_path):
    single = pq.read_table(
        export_topk(model, data, tmp_path / "all.parquet", k=6, batch_size=4, progress=False))
    parts = [export_topk(model, data, tmp_path / "r.parquet", k=6, batch_size=4, num_shards=3, shard=i,
                         progress=False) for i in range(3)]
    assert pa.concat_tables([pq.read_table(p) for p in parts]).equals(single)
    assert pq.ParquetFile(tmp_path / "all.parquet").num_row_groups == 10  # one per batch of 4 users


def test_shard_naming_and_bounds():
    assert shard_path("out/recs.csv.gz", 4, 2).as_posix() == "out/recs-part-00002-of-00004.csv.gz"
    assert shard_path("recs.parquet", 1, 0).as_posix() == "recs.parquet"
    bounds = [shard_bounds(10, 3, 3, i) for i in range(3)]
    assert bounds == [(0, 3), (3, 6), (6, 10)]  # 4 batches of <= 3 users, cut on batch edges
    assert [shard_bounds(2, 5, 3, i) for i in range(3)] == [(0, 0), (0, 0), (0, 2)]


def test_batches_respect_memory_budget(data, tmp_path):
    model = DotModel().fit(data)
    export_topk(model, data, tmp_path / "a.csv", memory_budget_mb=12 * 30 * 7 / 2**20, progress=False)
    assert model.max_batch_ == 7
    export_topk(model, data, tmp_path / "b.csv", batch_size=3, progress=False)
    assert model.max_batch_ == 7  # unchanged: batches of 3 are smaller
    a, b = read_csv(tmp_path / "a.csv"), read_csv(tmp_path / "b.csv")  # BLAS may round
    pd.testing.assert_frame_equal(a, b, rtol=1e-5)  # differently for other batch shapes


def test_user_subsets(model, data, tmp_path):
    df = read_csv(export_topk(model, data, tmp_path / "s.csv", users=["u5", "u1"], progress=False))
    assert df["user"].unique().tolist() == ["u5", "u1"]
    df = read_csv(export_topk(model, data, tmp_path / "s.csv", user_idx=[2], progress=False))
    assert df["user"].unique().tolist() == ["u2"]
    with pytest.raises(ValueError, match="not in the data: nobody"):
        export_topk(model, data, tmp_path / "s.csv", users=["u1", "nobody"], progress=False)
    with pytest.raises(ValueError, match="not both"):
        export_topk(model, data, tmp_path / "s.csv", users=["u1"], user_idx=[1], progress=False)


def test_new_users_fold_in(model, data, tmp_path):
    new = RatingMatrix(data.X[:5], pd.Index([f"new{i}" for i in range(5)]), data.items)
    df = read_csv(export_topk(model, new, tmp_path / "n.csv", k=3, progress=False))
    idx, _ = model.recommend(None, new.X, k=3)  # -1: fold in from the history
    assert df[df["user"] == "new0"]["item"].tolist() == new.items[idx[0]].tolist()
    # a known user id in a history file is scored as that user
    mixed = RatingMatrix(data.X[:2], pd.Index(["u0", "brand-new"]), data.items)
    df = read_csv(export_topk(model, mixed, tmp_path / "m.csv", k=3, progress=False))
    idx, _ = model.recommend([0, -1], mixed.X, k=3)
    assert df["item"].tolist() == mixed.items[idx.ravel()].tolist()
    strict = KnownOnlyModel().fit(data)
    with pytest.raises(NotFittedForUser, match="1 of them, e.g. brand-new"):
        export_topk(strict, mixed, tmp_path / "k.csv", progress=False)
    assert not (tmp_path / "k.csv").exists()


def test_bad_arguments(model, data, tmp_path):
    other = RatingMatrix(data.X[:, :29], data.users, data.items[:29])
    with pytest.raises(ValueError, match="align"):
        export_topk(model, other, tmp_path / "x.csv", progress=False)
    with pytest.raises(ValueError, match="cannot tell the format"):
        export_topk(model, data, tmp_path / "x.txt", progress=False)
    with pytest.raises(ValueError, match="shard"):
        export_topk(model, data, tmp_path / "x.csv", num_shards=2, shard=2, progress=False)
    with pytest.raises(ValueError, match="k must be"):
        export_topk(model, data, tmp_path / "x.csv", k=0, progress=False)
    export_topk(model, data, tmp_path / "x.txt", format="csv", num_shards=2, shard=1, progress=False)
    assert (tmp_path / "x-part-00001-of-00002.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x-part-00001-of-00002.txt"]


def test_failure_leaves_no_file(data, tmp_path):
    with pytest.raises((ValueError, FloatingPointError), match="NaN"):
        export_topk(DotModel(nan=True).fit(data), data, tmp_path / "x.parquet", progress=False)
    assert list(tmp_path.iterdir()) == []


SLOW_EXPORT = """
import sys, time
import numpy as np, pandas as pd, scipy.sparse as sp, torch
from autorec.models.base import BaseRecommender
from autorec.data import RatingMatrix
from autorec.export import export_topk

class Slow(BaseRecommender):
    def fit(self, train, valid=None):
        self._init_fit(train)
        return self
    def score(self, users, X):
        print("batch", flush=True)
        time.sleep(float(sys.argv[2]))
        return torch.rand(len(users), self.n_items_)

R = RatingMatrix(sp.random(50, 20, density=0.3, format="csr"), pd.RangeIndex(50), pd.RangeIndex(20))
export_topk(Slow().fit(R), R, sys.argv[1], k=3, batch_size=5, progress=False)
print("done", flush=True)
"""


@pytest.mark.parametrize("name", ["recs.csv", "recs.parquet"])
def test_killed_export_leaves_no_complete_file(model, data, tmp_path, name):
    script = tmp_path / "slow.py"
    script.write_text(textwrap.dedent(SLOW_EXPORT))
    target = tmp_path / "out" / name
    proc = subprocess.Popen([sys.executable, str(script), str(target), "0.5"], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline() == "batch\n"
        assert proc.stdout.readline() == "batch\n"  # the first batch went to the writer
        time.sleep(0.1)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    left = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert not target.exists()
    assert len(left) == 2 and left[0] == f".{name}.lock" and left[1].startswith(f".{name}.tmp-")
    export_topk(model, data, target, k=3, progress=False)  # re-run: clean restart
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [name]


def test_a_second_export_to_the_same_path_fails_clearly_and_the_first_completes(model, data, tmp_path):
    from autorec.exceptions import ExportInProgress

    script = tmp_path / "slow.py"
    script.write_text(textwrap.dedent(SLOW_EXPORT))
    target = tmp_path / "out" / "recs.csv"
    proc = subprocess.Popen([sys.executable, str(script), str(target), "0.15"], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline() == "batch\n"  # the first export holds the lock
        with pytest.raises(ExportInProgress, match=rf"recs.csv: another process \(pid {proc.pid}\)"):
            export_topk(model, data, target, k=3, progress=False)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0 and out.endswith("done\n")  # its temp file was left alone
    frame = pd.read_csv(target)
    assert len(frame) == 50 * 3 and frame["user"].nunique() == 50
    assert sorted(p.name for p in target.parent.iterdir()) == ["recs.csv"]  # lock gone too
    export_topk(model, data, target, k=3, progress=False)  # and the path is free again
