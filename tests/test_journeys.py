"""The user's journeys, end to end through the command line: train on everything and
recommend for a person (nothing they rated comes back), run folders written whole,
checkpoint and resume, tune then evaluate, and the small things users hit on the way."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import autorec
from autorec import cli
from autorec.cli import runs
from autorec.datasets.movielens import DATASETS
from autorec.datasets.synthetic import synthetic_ratings
from autorec.protocols import PROTOCOLS


@pytest.fixture(autouse=True)
def no_network(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("AUTOREC_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("AUTOREC_MIRROR", "http://127.0.0.1:9/")


def run(capsys, *argv):
    code = cli.main(["--quiet", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def ml100k_dir() -> str:
    folder = os.environ.get("AUTOREC_DATA")
    if not folder or not (Path(folder) / "ml-100k.zip").exists():
        pytest.skip("AUTOREC_DATA does not point at a folder with ml-100k.zip")
    return folder


@pytest.fixture(scope="module")
def ratings_csv(tmp_path_factory):
    R = synthetic_ratings(n_users=50, n_items=60, density=0.2, seed=4)
    df = R.to_frame()
    df["user"] = "u" + df["user"].astype(str)
    path = tmp_path_factory.mktemp("data") / "ratings.csv"
    df.to_csv(path, index=False)
    return path


def rated_pairs(R) -> set:
    df = R.to_frame()
    return set(zip(df["user"], df["item"]))


# ------------------------------------------------- recommend for a person
@pytest.mark.parametrize("protocol", [None, "none"])
def test_ml100k_pop_recommends_nothing_a_user_rated(protocol, tmp_path, capsys):
    """The bug of the issue: 2,635 of 9,430 rows were items the user had rated."""
    folder = ml100k_dir()
    out = tmp_path / "pop"
    argv = ["train", "--model", "pop", "--dataset", "ml-100k", "--data-dir", folder, "--out", out]
    code, text, err = run(capsys, *argv, *(["--protocol", protocol] if protocol else []))
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    if protocol == "none":
        assert metrics["part"] is None and "no test part" in metrics["note"] and "nothing measured" in text
        config = json.loads((out / "config.json").read_text())
        assert config["protocol"] == {"name": "none", "kwargs": {"threshold": 3.5}}
        code, _, err = run(capsys, "evaluate", out / "model.pt")
        assert code == 2 and "no test part" in err
    else:
        assert metrics["part"] == "test" and metrics["protocol"] == "per-user"
    code, text, _ = run(capsys, "recommend", out / "model.pt", "--k", 10, "--out", tmp_path / "r.csv",
                        "--titles")
    assert code == 0 and "943 users" in text
    recs = pd.read_csv(tmp_path / "r.csv")
    assert len(recs) == 9430 and recs["title"].notna().all()
    R = autorec.load_movielens("ml-100k", data_dir=folder, download=False)
    assert not rated_pairs(R) & set(zip(recs["user"], recs["item"]))
    # --include-seen is the only way back to recommending rated items
    code, _, _ = run(capsys, "recommend", out / "model.pt", "--include-seen", "--out", tmp_path / "s.csv")
    seen = pd.read_csv(tmp_path / "s.csv")
    assert rated_pairs(R) & set(zip(seen["user"], seen["item"]))


def test_recommend_excludes_low_ratings_and_test_items_of_a_history_file(ratings_csv, tmp_path, capsys):
    out = tmp_path / "ease"
    assert run(capsys, "train", "--model", "ease", "--ratings", ratings_csv, "--out", out)[0] == 0
    code, text, _ = run(capsys, "recommend", out / "model.pt", "--k", 20, "--out", tmp_path / "r.parquet")
    assert code == 0 and "every item each user rated is excluded (all the data, not only" in text
    recs = pd.read_parquet(tmp_path / "r.parquet")
    R = autorec.RatingMatrix.from_csv(ratings_csv)
    assert not rated_pairs(R) & set(zip(recs["user"], recs["item"]))  # 1-star ratings too
    history = tmp_path / "h.csv"
    pd.DataFrame({"user": ["new", "new"], "item": [1, 2], "rating": [1.0, 5.0]}).to_csv(history, index=False)
    code, _, _ = run(capsys, "recommend", out / "model.pt", "--history", history, "--out", tmp_path / "n.csv")
    new = pd.read_csv(tmp_path / "n.csv")
    assert code == 0 and set(new["user"]) == {"new"} and not {1, 2} & set(new["item"])


def test_recommend_help_says_what_is_excluded(capsys):
    assert cli.main(["recommend", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Every item a user rated is excluded" in text and "not only the training part" in text


# ------------------------------------------------------ the run folder
def test_a_run_folder_is_refused_then_replaced_whole(ratings_csv, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--ratings", ratings_csv, "--out", out, "--set", "epochs=2", "--set", "hidden=8"]
    assert run(capsys, "train", "--model", "i-autorec", *argv)[0] == 0
    assert (out / "history.csv").exists()
    code, _, err = run(capsys, "train", "--model", "pop", "--ratings", ratings_csv, "--out", out)
    assert code == 2 and "already holds files" in err and "--overwrite" in err
    code, _, err = run(capsys, "train", "--model", "pop", "--ratings", ratings_csv, "--out", out, "--overwrite")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "metrics.json", "model.pt"]  # no stale history
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no temp folder left


def test_a_failed_run_leaves_no_folder(ratings_csv, tmp_path, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(runs, "write_json", broken)
    from autorec.cli import commands

    monkeypatch.setattr(commands, "write_json", broken)
    code, _, err = run(capsys, "train", "--model", "pop", "--ratings", ratings_csv, "--out", tmp_path / "o")
    assert code == 1 and "disk full" in err
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------- checkpoint and resume
def test_train_checkpoint_resume_equals_one_run(ratings_csv, tmp_path, capsys):
    common = ["train", "--model", "mult-dae", "--ratings", ratings_csv, "--set", "dims=[16]",
              "--set", "batch_size=16", "--set", "device=cpu"]
    assert run(capsys, *common, "--set", "epochs=4", "--out", tmp_path / "straight")[0] == 0
    ckpt = tmp_path / "ckpt.pt"
    assert run(capsys, *common, "--set", "epochs=2", "--out", tmp_path / "first", "--checkpoint", ckpt)[0] == 0
    code, _, err = run(capsys, *common, "--set", "epochs=4", "--out", tmp_path / "resumed",
                       "--checkpoint", ckpt, "--resume")
    assert code == 0, err
    straight = pd.read_csv(tmp_path / "straight" / "history.csv")
    resumed = pd.read_csv(tmp_path / "resumed" / "history.csv")
    assert len(resumed) == 4
    pd.testing.assert_frame_equal(straight.drop(columns="seconds"), resumed.drop(columns="seconds"))
    a = autorec.load(tmp_path / "straight" / "model.pt")
    b = autorec.load(tmp_path / "resumed" / "model.pt")
    for (name, x), (_, y) in zip(a.network_.state_dict().items(), b.network_.state_dict().items()):
        assert bool((x == y).all()), name  # bit for bit


# ------------------------------------------------------------------ tune
def test_tune_then_evaluate_and_resume(ratings_csv, tmp_path, capsys):
    out = tmp_path / "search"
    argv = ["tune", "--model", "ease", "--ratings", ratings_csv, "--out", out,
            "--space", "l2=[1,30,1000]"]
    code, text, err = run(capsys, *argv)
    assert code == 0, err
    assert {"trials.jsonl", "trials.csv", "best.json", "model.pt", "config.json", "metrics.json"} <= {
        p.name for p in out.iterdir()}
    trials = pd.read_csv(out / "trials.csv")
    assert list(trials["param.l2"]) == [1.0, 30.0, 1000.0]  # ints became the parameter's floats
    best = json.loads((out / "best.json").read_text())
    assert best["part"] == "valid" and best["value"] == trials["value"].max()
    config = json.loads((out / "config.json").read_text())
    assert config["protocol"]["kwargs"]["valid_size"] == 0.1  # a validation part was carved
    assert config["model"]["params"]["l2"] == best["params"]["l2"]
    assert "| trial | l2 | valid ndcg@100 | s |" in text
    code, text, _ = run(capsys, "evaluate", out / "model.pt", "--json")
    assert code == 0 and "ndcg@10" in json.loads(text)
    lines = (out / "trials.jsonl").read_text().splitlines()
    (out / "trials.jsonl").write_text("\n".join(lines[:2]) + "\n")  # stopped after one trial
    code, _, err = run(capsys, *argv)
    assert code == 0 and len(pd.read_csv(out / "trials.csv")) == 3
    code, _, err = run(capsys, "tune", "--model", "ease", "--ratings", ratings_csv, "--out", out,
                       "--space", "l2=[2,3]")
    assert code == 1 and "holds another search" in err


def test_tune_space_syntax_and_errors(ratings_csv, tmp_path, capsys):
    from autorec.cli.options import UsageError, parse_space
    from autorec.tuning import Float, Int

    defaults = autorec.MultVAE().get_params()
    space = parse_space(["lr=1e-4..1e-2:log", "epochs=5..20", "dims=[[600,200],[200]]", "dropout=0.2,0.5"],
                        defaults)
    assert space == {"lr": Float(1e-4, 1e-2, log=True), "epochs": Int(5, 20),
                     "dims": [(600, 200), (200,)], "dropout": [0.2, 0.5]}
    for bad in (["lr=abc..1"], ["nope=[1]"], ["lr=[1,\"x\"]"], ["lr=1..2:ln"]):
        with pytest.raises(UsageError):
            parse_space(bad, defaults)
    code, _, err = run(capsys, "tune", "--model", "pop", "--ratings", ratings_csv, "--out", tmp_path / "t",
                       "--space", "x=[1]")
    assert code == 2 and "unknown parameter 'x'" in err
    code, _, err = run(capsys, "tune", "--model", "ease", "--ratings", ratings_csv, "--out", tmp_path / "t",
                       "--space", "l2=[1]", "--protocol", "none")
    assert code == 2 and "validation part" in err


# ------------------------------------------------------ smaller things
def test_datasets_info_names_protocols_that_protocol_accepts(capsys):
    for spec in DATASETS.values():
        assert set(spec.protocols) <= set(PROTOCOLS), spec.name
    assert cli.main(["datasets", "info", "ml-1m"]) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("protocols")][0]
    assert line == "protocols (--protocol): autorec, per-user, strong"


def test_recall_is_labelled_normalised_and_plain_recall_is_offered(ratings_csv, tmp_path, capsys):
    out = tmp_path / "pop"
    code, text, _ = run(capsys, "train", "--model", "pop", "--ratings", ratings_csv, "--out", out)
    assert code == 0 and "| recall_plain@20 |" in text
    assert "recall@k is the normalised recall of Liang et al. 2018, hits / min(k, test items)" in text
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["recall_plain@100"] <= metrics["recall@100"]
    train, test = autorec.split.per_user(autorec.RatingMatrix.from_csv(ratings_csv), 0.2, seed=0)
    result = autorec.evaluate(autorec.Popularity().fit(train), train, test, metrics=("recall",), ks=(10,))
    assert "normalised" in result.table()


def test_progress_bars_only_on_a_terminal(capsys):
    from .conftest import block_clicks

    autorec.MultDAE(dims=(8,), epochs=2, progress=True, device="cpu").fit(block_clicks())
    assert capsys.readouterr().err == ""  # stderr is not a terminal here: no \r frames


def test_csv_timestamps_may_be_iso_8601(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("user,item,rating,when\na,1,5,2024-05-01T12:30:00Z\na,2,4,2024-05-01 12:31\n"
                    "b,1,3,2024-05-02\nb,2,3,2024-05-02T01:00:00+01:00\n")
    R = autorec.RatingMatrix.from_csv(path, timestamp="when")
    assert R.timestamps.tolist() == [1714566600, 1714566660, 1714608000, 1714608000]  # Unix s, UTC
    df = pd.read_csv(path)
    df["when"] = pd.to_datetime(df["when"], format="ISO8601", utc=True)
    assert autorec.RatingMatrix.from_frame(df, timestamp="when").timestamps.tolist() == R.timestamps.tolist()
    path.write_text("user,item,rating,when\na,1,5,2024-05-01\na,2,4,yesterday\n")
    with pytest.raises(autorec.DataError, match=r"'yesterday' at row 2 \(line 3 of the file\)"):
        autorec.RatingMatrix.from_csv(path, timestamp="when")
    path.write_text("user,item,rating,when\na,1,5,881250949\na,2,4,881250950\n")  # Unix times stay
    assert autorec.RatingMatrix.from_csv(path, timestamp="when").timestamps.tolist() == [881250949, 881250950]
    assert np.issubdtype(R.timestamps.dtype, np.int64)


def test_version_answers_before_the_parser_loads_pandas():
    import subprocess
    import sys

    code = ("import sys; from autorec.cli import main; main(['--version']); "
            "sys.exit(1 if {'pandas', 'torch', 'scipy'} & set(sys.modules) else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0 and proc.stdout.strip() == f"autorec {autorec.__version__}"
