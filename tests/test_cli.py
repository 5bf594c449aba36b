"""The command line: train -> evaluate -> recommend end to end, and every bad argument."""
from __future__ import annotations

import functools
import json
import subprocess
import sys

import pandas as pd
import pytest

import autorec
import autorec.datasets.synthetic
from autorec import cli
from autorec.cli import demo as _cli_demo
from autorec.cli.options import parse_assignments
from autorec.protocols import PROTOCOLS
from autorec.datasets.synthetic import synthetic_ratings

pq = pytest.importorskip("pyarrow.parquet")
pa = pytest.importorskip("pyarrow")


@pytest.fixture(autouse=True)
def no_user_cache(tmp_path_factory, monkeypatch):
    """Never read or write the user's cache or $AUTOREC_DATA; never download."""
    monkeypatch.setenv("AUTOREC_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("AUTOREC_DATA", raising=False)
    monkeypatch.setenv("AUTOREC_MIRROR", "http://127.0.0.1:9/")


def run(capsys, *argv):
    """``cli.main(argv)`` -> (exit status, stdout, stderr)."""
    code = cli.main(["--quiet", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def ratings_csv(tmp_path_factory):
    """Explicit ratings with string user ids and integer item ids 1001..1080."""
    R = synthetic_ratings(n_users=60, n_items=80, density=0.15, seed=3)
    df = R.to_frame()
    df["user"] = "u" + df["user"].astype(str)
    df["item"] = df["item"] + 1000
    path = tmp_path_factory.mktemp("data") / "ratings.csv"
    df.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def pop_run(ratings_csv, tmp_path_factory):
    """A Popularity model trained through the CLI (per-user protocol, ratings > 3.5)."""
    out = tmp_path_factory.mktemp("runs") / "pop"
    assert cli.main(["-q", "train", "--model", "pop", "--ratings", str(ratings_csv), "--out", str(out)]) == 0
    return out


def train_split(run_dir):
    """The training part of a run's split, rebuilt as the CLI does."""
    config = json.loads((run_dir / "config.json").read_text())
    R = autorec.RatingMatrix.from_csv(config["data"]["ratings"])
    return PROTOCOLS[config["protocol"]["name"]](R, **config["protocol"]["kwargs"]).train


def test_train_writes_model_config_and_metrics(pop_run, capsys):
    assert sorted(p.name for p in pop_run.iterdir()) == ["config.json", "metrics.json", "model.pt"]
    config = json.loads((pop_run / "config.json").read_text())
    assert config["model"] == {"name": "pop", "class": "Popularity", "params": {}}
    assert config["protocol"] == {"name": "per-user", "kwargs": {"seed": 0, "threshold": 3.5}}
    assert {"torch", "numpy", "python"} <= set(config["versions"])
    metrics = json.loads((pop_run / "metrics.json").read_text())
    assert 0 < metrics["ndcg@10"] <= 1 and "recall@100" in metrics
    code, out, err = run(capsys, "evaluate", pop_run / "model.pt")
    assert code == 0 and "| ndcg@10 |" in out and err == ""
    code, out, _ = run(capsys, "evaluate", pop_run / "model.pt", "--json")
    assert code == 0 and json.loads(out)["ndcg@10"] == pytest.approx(metrics["ndcg@10"])


def test_evaluate_on_data_given_again(pop_run, ratings_csv, capsys):
    code, out, _ = run(capsys, "evaluate", pop_run / "model.pt", "--ratings", ratings_csv, "--json")
    saved = json.loads((pop_run / "metrics.json").read_text())
    assert code == 0 and json.loads(out)["recall@20"] == pytest.approx(saved["recall@20"])


def test_datasets_commands(tmp_path, capsys):
    code, out, _ = run(capsys, "datasets", "list")
    assert code == 0 and out.splitlines()[0].split() == ["name", "ratings", "users", "items", "available"]
    assert "ml-100k" in out and "ml-latest-small" in out
    code, out, _ = run(capsys, "datasets", "info", "ml-1m", "--json")
    assert code == 0 and json.loads(out)["n_users"] == 6040
    code, _, err = run(capsys, "datasets", "download", "ml-100k", "--dir", tmp_path)
    assert code == 1 and err.count("\n") == 1 and "127.0.0.1:9" in err  # no network in tests
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "ml-100k.zip").write_bytes(b"")
    code, out, _ = run(capsys, "datasets", "download", "ml-100k", "--dir", tmp_path)
    assert code == 0 and "already at" in out


def test_rating_model_history_and_set(ratings_csv, tmp_path, capsys):
    out = tmp_path / "iautorec"
    code, text, err = run(capsys, "train", "--model", "i-autorec", "--ratings", ratings_csv, "--out", out,
                          "--set", "epochs=2", "--set", "hidden=16", "--set", "device=cpu")
    assert code == 0, err
    assert "| rmse |" in text
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["params"]["hidden"] == 16 and config["protocol"]["name"] == "autorec"
    assert len(pd.read_csv(out / "history.csv")) == 2
    code, text, _ = run(capsys, "evaluate", out / "model.pt", "--json")
    assert json.loads(text)["rmse"] == pytest.approx(json.loads((out / "metrics.json").read_text())["rmse"])


def test_recommend_csv_k_rows_no_seen_raw_ids(pop_run, tmp_path, capsys):
    code, text, _ = run(capsys, "recommend", pop_run / "model.pt", "--k", 5, "--out", tmp_path / "r.csv")
    assert code == 0 and "60 users" in text
    df = pd.read_csv(tmp_path / "r.csv", dtype={"user": str, "item": str})
    assert list(df.columns) == ["user", "item", "rank", "score"]
    train = train_split(pop_run)
    assert df["user"].unique().tolist() == list(train.users)  # raw ids, all users
    assert train.items.dtype == "str"  # CSV ids are read as text, exactly
    assert df["user"].str.startswith("u").all() and df["item"].astype(int).between(1001, 1080).all()
    assert (df.groupby("user").size() == 5).all()
    assert len(df.merge(train.to_frame(), on=["user", "item"])) == 0  # no seen items


def test_recommend_sharded_equals_unsharded(pop_run, tmp_path, capsys):
    model = pop_run / "model.pt"
    for ext in ("csv", "parquet"):
        assert run(capsys, "recommend", model, "--out", tmp_path / f"all.{ext}", "--batch-size", 7)[0] == 0
        for shard in range(3):
            assert run(capsys, "recommend", model, "--out", tmp_path / f"r.{ext}", "--batch-size", 7,
                       "--num-shards", 3, "--shard", shard)[0] == 0
    parts = [tmp_path / f"r-part-{i:05d}-of-00003.csv" for i in range(3)]
    assert b"".join(p.read_bytes() for p in parts) == (tmp_path / "all.csv").read_bytes()
    tables = [pq.read_table(tmp_path / f"r-part-{i:05d}-of-00003.parquet") for i in range(3)]
    assert pa.concat_tables(tables).equals(pq.read_table(tmp_path / "all.parquet"))


def test_recommend_users_and_new_histories(pop_run, ratings_csv, tmp_path, capsys):
    users = tmp_path / "users.txt"
    users.write_text("u7\nu3\n")
    code = run(capsys, "recommend", pop_run / "model.pt", "--users", users, "--out", tmp_path / "s.jsonl")[0]
    assert code == 0
    rows = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert [r["user"] for r in rows] == ["u7", "u3"] and len(rows[0]["items"]) == 10
    history = tmp_path / "new.tsv"
    pd.DataFrame({"who": ["x1", "x1", "x2"], "movie": [1001, 1002, 9999], "stars": [5, 4, 5]}).to_csv(
        history, sep="\t", index=False)
    code, _, err = run(capsys, "recommend", pop_run / "model.pt", "--history", history, "--sep", "tab",
                       "--user", "who", "--item", "movie", "--rating", "stars", "--out", tmp_path / "n.csv")
    assert code == 0 and "1 ratings dropped" in err  # item 9999 is unknown to the model
    df = pd.read_csv(tmp_path / "n.csv")
    assert set(df["user"]) == {"x1", "x2"}
    assert not ({1001, 1002} & set(df[df["user"] == "x1"]["item"]))


def test_parse_assignments():
    assert parse_assignments(["hidden=300", "lr=1e-3", "activation=relu", "dims=[600,200]",
                              "patience=null", "x=None"], "--set") == {
        "hidden": 300, "lr": 1e-3, "activation": "relu", "dims": (600, 200), "patience": None, "x": None}


TRAIN = ["train", "--out", "{tmp}/o", "--model"]
POP = TRAIN + ["pop", "--ratings", "{csv}"]
REC = ["recommend", "{run}/model.pt", "--out"]
BAD = [
    (2, "invalid choice: 'nope'", TRAIN + ["nope", "--ratings", "{csv}"]),
    (2, "invalid choice: 'ml-5m'", TRAIN + ["pop", "--dataset", "ml-5m"]),
    (2, "unknown parameter 'hiden' for model 'i-autorec' (did you mean 'hidden'?); valid: hidden,",
     TRAIN + ["i-autorec", "--ratings", "{csv}", "--set", "hiden=3"]),
    (2, "--set expects key=value", POP + ["--set", "x"]),
    (2, "unknown parameter 'tset_size' for protocol 'per-user'", POP + ["--split", "tset_size=0.3"]),
    (2, "one of the arguments --dataset --ratings is required", TRAIN + ["pop"]),
    (2, "the strong protocol is for ranking models",
     TRAIN + ["biased-mf", "--ratings", "{csv}", "--protocol", "strong"]),
    (1, "missing.csv: no such ratings file", TRAIN + ["pop", "--ratings", "{tmp}/missing.csv"]),
    (1, "the separator is probably not ';'", POP + ["--sep", ";"]),
    (1, "missing column(s) ['uid']", POP + ["--user", "uid"]),
    (1, "nope.pt: no such model file", ["evaluate", "{tmp}/nope.pt"]),
    (2, "--shard must be in [0, 1]", REC + ["{tmp}/r.csv", "--num-shards", "2", "--shard", "2"]),
    (2, "argument --k: must be a positive integer", REC + ["{tmp}/r.csv", "--k", "0"]),
    (2, "cannot tell the format from the name; end it with .csv", REC + ["{tmp}/r.txt"]),
    (2, "or give --format csv|parquet|jsonl", REC + ["{tmp}/r.xlsx"]),
    (2, "--set l2='abc': l2 takes a number (default 300.0), not text",
     TRAIN + ["i-autorec", "--ratings", "{csv}", "--set", "l2=abc"]),
    (2, "--set seed=1.5: seed takes an integer (default 0), not a number",
     TRAIN + ["i-autorec", "--ratings", "{csv}", "--set", "seed=1.5"]),
    (2, "--set: dropout must be a number in [0, 1), got 2.0",
     TRAIN + ["mult-dae", "--ratings", "{csv}", "--set", "dropout=2"]),
    (2, "--resume needs --checkpoint", POP + ["--resume"]),
    (2, "--checkpoint: Popularity is not trained epoch by epoch", POP + ["--checkpoint", "{tmp}/c.pt"]),
    (2, "--checkpoint must be outside --out", TRAIN + ["mult-dae", "--ratings", "{csv}",
                                                      "--checkpoint", "{tmp}/o/c.pt"]),
    (2, "--protocol none takes no --split", POP + ["--protocol", "none", "--split", "test_size=0.1"]),
    (1, "1 user ids are not in the data: u999", REC + ["{tmp}/r.csv", "--users", "{tmp}/u.txt"]),
    (1, "no such ratings file", REC + ["{tmp}/r.csv", "--history", "{tmp}/h.csv"]),
    (2, "the following arguments are required: COMMAND", []),
]


@pytest.mark.parametrize("code, message, argv", BAD, ids=[b[1][:30] for b in BAD])
def test_bad_arguments_one_line(code, message, argv, pop_run, ratings_csv, tmp_path, capsys):
    (tmp_path / "u.txt").write_text("u1\nu999\n")
    argv = [a.format(csv=ratings_csv, tmp=tmp_path, run=pop_run) for a in argv]
    status, out, err = run(capsys, *argv)
    assert status == code
    assert message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "r.csv").exists()


def test_evaluate_without_config_and_debug(pop_run, tmp_path, capsys):
    lone = tmp_path / "model.pt"
    lone.write_bytes((pop_run / "model.pt").read_bytes())
    code, _, err = run(capsys, "evaluate", lone)
    assert code == 1 and "no config.json next to" in err
    with pytest.raises(FileNotFoundError):
        cli.main(["evaluate", str(lone), "--debug"])


def test_demo_falls_back_to_synthetic_data(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(_cli_demo, "DEMO_MODELS", {"pop": ("per-user", {}, {}),
                                                   "ease": ("per-user", {"l2": 100.0}, {"l2": 100.0})})
    small = functools.partial(synthetic_ratings, n_users=120, n_items=150)
    monkeypatch.setattr(autorec.datasets, "synthetic_ratings", small)
    code, out, err = run(capsys, "demo", "--quick", "--no-download", "--data-dir", tmp_path)
    assert code == 0
    fallback = [line for line in err.splitlines() if "not found" in line]
    assert len(fallback) == 1 and f"ml-100k.zip not found in {tmp_path}" in fallback[0]
    assert "downloading is off (--no-download); using the built-in synthetic data" in fallback[0]
    assert "| pop | per-user | ndcg@10 |" in out and "| ease | per-user | recall@20 |" in out


def test_console_entry_point_exit_code(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "autorec", "train", "--model", "pop", "--ratings",
                           str(tmp_path / "none.csv"), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    missing = tmp_path / "none.csv"
    assert proc.stderr.strip().splitlines() == [f"autorec train: error: {missing}: no such ratings file"]
    assert proc.stdout == ""
