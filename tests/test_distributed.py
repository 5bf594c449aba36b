"""Data parallelism on torch.distributed: 2 CPU processes (gloo on 127.0.0.1) give what one
process gives.

Processes are started with ``torch.multiprocessing`` (spawn) and meet through a file store
in the test's temp folder (no port to choose), or with ``torchrun --standalone`` (the CLI
tests; torchrun asks the OS for a free port). Every launch has a deadline after which its
processes are killed and the test fails.

Tolerance: weights of 2 ranks vs 1 process after 3 epochs agree to ``ATOL`` (absolute,
float32): the ranks sum their parts of each batch's gradient in another order than one
process does, nothing else differs (measured: at most 4e-7).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import autorec
from autorec.exceptions import DistributedError
from autorec.export import export_topk, manifest_path, shard_path
from autorec.models.torch_base import TorchRecommender
from autorec.train import Batch

from .conftest import two_group_ratings

ATOL = 1e-5
WORLD = 2
N_USERS, N_ITEMS = 121, 81  # batches of 8 leave a last batch of 1 row: rank 1 gets none
DEADLINE_S = 150

# every torch model, small enough for a few seconds in all; ranking models on clicks
CASES = {
    "i-autorec": dict(hidden=8, l2=1.0, batch_size=8),
    "u-autorec": dict(hidden=8, l2=1.0, batch_size=8, route="dense"),
    "cdae": dict(hidden=8, batch_size=8, negative_samples=2.0),
    "mult-dae": dict(dims=(8,), batch_size=8, l2=0.01),
    "mult-vae": dict(dims=(16, 4), batch_size=8, total_anneal_steps=20),
    "biased-mf": dict(factors=4, batch_size=8),
    "kernel-i-autorec": dict(hidden=8, l2=1.0, batch_size=8, kernel_dim=2, lambda_s=0.01),
}
TORCH_MODELS = sorted(n for n, cls in autorec.MODELS.items() if issubclass(cls, TorchRecommender))
EXPORTS = ("recs.csv", "recs.csv.gz", "recs.jsonl", "recs.parquet")
KILL_MODEL, KILL_AT_EPOCH = "mult-dae", 3


def _data(name):
    """(train, valid) of the case: rating models on ratings, ranking models on clicks."""
    R = two_group_ratings(n_users=N_USERS, n_items=N_ITEMS)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if autorec.MODELS[name].predicts_ratings:
            return autorec.split.holdout(R, test_size=0.1, seed=0)
        return autorec.split.per_user(R.binarize(4), test_size=0.2, seed=0)


def _model(name, **extra):
    params = dict(CASES[name], epochs=3, lr=1e-2, patience=1, seed=5, device="cpu", progress=False)
    return autorec.MODELS[name](**{**params, **extra})


class _InTurns(torch.nn.Module):
    """Trains its two layers in turns, the other one getting no gradient (as RecVAE's
    phases): parameters unused in a step, through the bare Trainer."""

    def __init__(self, n: int):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.enc, self.dec = torch.nn.Linear(n, 4), torch.nn.Linear(4, n)

    def loss(self, batch: Batch, step: int) -> torch.Tensor:
        x = batch.dense()  # (B, n)
        h = torch.tanh(self.enc(x))  # (B, 4)
        if step % 2:
            out = self.dec(h.detach())
        else:
            out = torch.nn.functional.linear(h, self.dec.weight.detach(), self.dec.bias.detach())
        noise = batch.normal_rows(x.shape[1])  # (B, n)
        return ((out - x - 0.1 * noise) ** 2).sum() / batch.n_global


def _fit_in_turns() -> dict:
    from autorec.train import Trainer

    X = _data("mult-dae")[0].X
    net = _InTurns(X.shape[1])
    Trainer(epochs=2, batch_size=8, lr=1e-2, seed=1).fit(net, X)
    return {k: v.clone() for k, v in net.state_dict().items()}


def _result(model) -> dict:
    return {"state": {k: v.clone() for k, v in model.network_.state_dict().items()},
            "history": model.history_, "best_epoch": model.best_epoch_}


# ------------------------------------------------------------- the workers
def _worker(rank: int, world: int, store: str, out: str, task: str) -> None:
    """One rank: join the group through the file store, run ``task``, record any error."""
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # 127.0.0.1
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                                         world_size=world, timeout=timedelta(seconds=60))
    out = Path(out)
    try:
        TASKS[task](rank, out)
    except BaseException as exc:
        (out / f"error-{rank}.txt").write_text(f"{type(exc).__name__}: {exc}")
        raise


def _task_train(rank: int, out: Path) -> None:
    """Every torch model; a rank-dependent dataset; exports (API and CLI); then rank 1 dies."""
    from autorec.cli import main

    for name in CASES:
        train, valid = _data(name)
        model = _model(name).fit(train, valid, checkpoint=out / f"{name}.ckpt")
        torch.save(_result(model), out / f"{name}-rank{rank}.pt")
        if name == "mult-dae" and rank == 0:
            model.save(out / "model.pt")
        if name == "i-autorec":
            _export_with_a_new_user_on_rank_1(model, out, rank)
    torch.save(_fit_in_turns(), out / f"in-turns-rank{rank}.pt")
    try:  # the ranks hold different data: caught before the first step
        _model("mult-dae").fit(autorec.RatingMatrix(*_rank_dependent_data()))
    except DistributedError as exc:
        (out / f"mismatch-{rank}.txt").write_text(str(exc))
    torch.distributed.barrier()  # model.pt is written
    model = autorec.load(out / "model.pt")
    data = _data("mult-dae")[0]
    for name in EXPORTS:
        export_topk(model, data, out / "parts" / name, k=7, batch_size=10, progress=False)
    code = main(["recommend", str(out / "model.pt"), "--history", str(out / "history.csv"),
                 "--rating", "none", "--k", "5", "--batch-size", "10", "--out", str(out / "cli" / "recs.csv")])
    assert code == 0
    _task_kill(rank, out)


def _export_with_a_new_user_on_rank_1(iar, out: Path, rank: int) -> None:
    """I-AutoRec cannot score new users; only the last part has one."""
    import scipy.sparse as sp

    R = _data("i-autorec")[0]
    data = autorec.RatingMatrix(sp.vstack([R.X, R.X[:1]]).tocsr(), R.users.append(pd.Index([10**6])), R.items)
    try:
        export_topk(iar, data, out / "refused" / "recs.csv", k=3, batch_size=10, progress=False)
    except Exception as exc:
        (out / f"refused-{rank}.txt").write_text(f"{type(exc).__name__}: {exc}")


def _rank_dependent_data():
    """Clicks whose rank-1 copy differs: the ranks must refuse to train on it."""
    R = _data("mult-dae")[0]
    X = R.X.copy()
    if torch.distributed.get_rank() == 1:
        X.data[0] = 2.0
    return X, R.users, R.items


def _task_kill(rank: int, out: Path) -> None:
    """Train 5 epochs with a checkpoint; rank 1 SIGKILLs itself in epoch 3."""
    from autorec.models import mult

    train, valid = _data(KILL_MODEL)
    steps_per_epoch = -(-int((train.user_counts() > 0).sum()) // CASES[KILL_MODEL]["batch_size"])
    if rank == 1:
        real = mult._MultNetwork.loss

        def dying(self, batch, step):
            if step == (KILL_AT_EPOCH - 1) * steps_per_epoch + 2:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(self, batch, step)

        mult._MultNetwork.loss = dying
    try:
        _model(KILL_MODEL, epochs=5, patience=None).fit(train, valid, checkpoint=out / "run.ckpt")
    except DistributedError as exc:
        (out / f"lost-{rank}.txt").write_text(str(exc))


def _task_resume(rank: int, out: Path) -> None:
    train, valid = _data(KILL_MODEL)
    model = _model(KILL_MODEL, epochs=5, patience=None).fit(
        train, valid, checkpoint=out / "run.ckpt", resume=True)
    torch.save(_result(model), out / f"resumed-rank{rank}.pt")


TASKS = {"train": _task_train, "resume": _task_resume}


def _launch(task: str, out: Path, world: int = WORLD) -> list[int]:
    """Run ``task`` on ``world`` spawned ranks; their exit codes (killed after the deadline)."""
    ctx = torch.multiprocessing.get_context("spawn")
    store = out / f"store-{task}"
    procs = [ctx.Process(target=_worker, args=(r, world, str(store), str(out), task)) for r in range(world)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + DEADLINE_S
    for p in procs:
        p.join(max(0.1, deadline - time.monotonic()))
    late = [p for p in procs if p.is_alive()]
    for p in late:
        p.kill()
        p.join()
    assert not late, f"{task}: {len(late)} rank(s) still running after {DEADLINE_S} s"
    return [p.exitcode for p in procs]


def _history_csv(path: Path) -> None:
    R = _data("mult-dae")[0]
    coo = R.X.tocoo()
    pd.DataFrame({"user": R.users[coo.row], "item": R.items[coo.col]}).to_csv(path, index=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One launch of 2 ranks: see :func:`_task_train` (rank 1 is killed at the end)."""
    out = tmp_path_factory.mktemp("ranks")
    _history_csv(out / "history.csv")
    codes = _launch("train", out)
    errors = {p.name: p.read_text() for p in out.glob("error-*.txt")}
    assert codes == [0, -signal.SIGKILL], errors
    return out


# ------------------------------------------------------------------ tests
def test_every_torch_model_is_covered():
    assert set(CASES) == set(TORCH_MODELS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_two_ranks_train_the_weights_of_one_process(trained, name):
    train, valid = _data(name)
    rows = train.X.T.tocsr() if name == "i-autorec" else train.X  # I-AutoRec trains on items
    trainable = int((np.diff(rows.indptr) > 0).sum())
    assert trainable % CASES[name]["batch_size"] == 1  # the last batch has one row: rank 1 gets none
    single = _model(name).fit(train, valid)
    ranks = [torch.load(trained / f"{name}-rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for key, weights in single.network_.state_dict().items():
        assert torch.equal(ranks[0]["state"][key], ranks[1]["state"][key]), key  # ranks agree exactly
        np.testing.assert_allclose(ranks[0]["state"][key].numpy(), weights.numpy(), rtol=0, atol=ATOL,
                                   err_msg=f"{name}: {key}")
    assert ranks[0]["best_epoch"] == single.best_epoch_
    assert len(ranks[0]["history"]) == len(single.history_)
    for ours, theirs in zip(ranks[0]["history"], single.history_):
        assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-5)
        metric = next(k for k in theirs if k not in ("epoch", "loss", "seconds"))
        assert ours[metric] == pytest.approx(theirs[metric], abs=1e-6)
    assert (trained / f"{name}.ckpt").exists()  # rank 0 wrote the checkpoint


def test_parameters_unused_in_a_step_train_as_in_one_process(trained):
    single = _fit_in_turns()
    for r in range(WORLD):
        ranked = torch.load(trained / f"in-turns-rank{r}.pt", weights_only=True)
        for key, w in single.items():
            np.testing.assert_allclose(ranked[key].numpy(), w.numpy(), rtol=0, atol=ATOL, err_msg=key)


def test_a_rank_that_cannot_write_its_part_fails_every_rank_and_no_manifest(trained):
    assert (trained / "refused-1.txt").read_text().startswith("NotFittedForUser: IAutoRec cannot score")
    assert (trained / "refused-0.txt").read_text() == (
        f"DistributedError: rank(s) [1] of 2 failed to write their part of {trained / 'refused' / 'recs.csv'} "
        "(their logs say why); no manifest was written")
    assert not manifest_path(trained / "refused" / "recs.csv").exists()


def test_ranks_refuse_different_training_data(trained):
    for r in range(WORLD):
        text = (trained / f"mismatch-{r}.txt").read_text()
        assert "differ from rank 0 in the training rows" in text


@pytest.fixture()
def one_thread():
    """The single-process reference with the ranks' thread count (1): a multithreaded BLAS
    may round a score differently with another number of threads, which can swap two
    near-tied items; byte identity holds at equal threads per process."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_two_rank_export_equals_one_process_byte_for_byte(trained, tmp_path, one_thread):
    model = autorec.load(trained / "model.pt")
    data = _data("mult-dae")[0]
    for name in EXPORTS:
        single = export_topk(model, data, tmp_path / name, k=7, batch_size=10, progress=False)
        parts = [shard_path(trained / "parts" / name, WORLD, r) for r in range(WORLD)]
        manifest = json.loads(manifest_path(trained / "parts" / name).read_text())
        assert [p["file"] for p in manifest["parts"]] == [p.name for p in parts]
        assert manifest["num_shards"] == WORLD and manifest["users"] == data.n_users
        for entry, part in zip(manifest["parts"], parts):
            assert entry["sha256"] == hashlib.sha256(part.read_bytes()).hexdigest()
            assert entry["bytes"] == part.stat().st_size
        if name.endswith(".parquet"):
            import pyarrow as pa
            import pyarrow.parquet as pq

            joined = pa.concat_tables([pq.read_table(p) for p in parts])
            assert joined.equals(pq.read_table(single))
            assert manifest["rows"] == joined.num_rows
        elif name.endswith(".gz"):
            assert b"".join(gzip.decompress(p.read_bytes()) for p in parts) == gzip.decompress(single.read_bytes())
        else:
            assert b"".join(p.read_bytes() for p in parts) == single.read_bytes()
    assert not list((trained / "parts").glob(".*"))  # no temp or lock file left


def test_cli_recommend_under_a_process_group_writes_one_part_per_rank(trained, tmp_path, capsys, one_thread):
    from autorec.cli import main

    assert main(["recommend", str(trained / "model.pt"), "--history", str(trained / "history.csv"),
                 "--rating", "none", "--k", "5", "--batch-size", "10", "--out", str(tmp_path / "recs.csv"), "-q"]) == 0
    parts = [shard_path(trained / "cli" / "recs.csv", WORLD, r) for r in range(WORLD)]
    assert b"".join(p.read_bytes() for p in parts) == (tmp_path / "recs.csv").read_bytes()
    assert json.loads(manifest_path(trained / "cli" / "recs.csv").read_text())["num_shards"] == WORLD


def test_a_killed_rank_stops_the_job_clearly_and_the_checkpoint_resumes(trained, tmp_path):
    text = (trained / "lost-0.txt").read_text()  # rank 1 was SIGKILLed at epoch 3
    assert text.startswith("rank 0 of 2:") and "another rank died" in text
    assert "run.ckpt" in text and "resume" in text
    saved = torch.load(trained / "run.ckpt", weights_only=True)
    assert saved["epoch"] == KILL_AT_EPOCH - 1  # the epoch before the kill
    (tmp_path / "run.ckpt").write_bytes((trained / "run.ckpt").read_bytes())
    assert _launch("resume", tmp_path) == [0, 0]
    train, valid = _data(KILL_MODEL)
    single = _model(KILL_MODEL, epochs=5, patience=None).fit(train, valid)
    resumed = [torch.load(tmp_path / f"resumed-rank{r}.pt", weights_only=True) for r in range(WORLD)]
    assert len(resumed[0]["history"]) == 5
    for key, weights in single.network_.state_dict().items():
        assert torch.equal(resumed[0]["state"][key], resumed[1]["state"][key])
        np.testing.assert_allclose(resumed[0]["state"][key].numpy(), weights.numpy(), rtol=0, atol=ATOL)


def test_batch_draws_of_the_ranks_are_slices_of_one_draw():
    import scipy.sparse as sp

    X = sp.random(11, 9, density=0.4, format="csr", random_state=3, dtype=np.float32)
    counts = np.diff(X.indptr)

    def draws(positions):
        g = torch.Generator().manual_seed(7)
        part = X[positions] if positions is not None else X
        b = Batch(torch.arange(part.shape[0]), part, 11, torch.device("cpu"), g,
                  **({} if positions is None else dict(n_global=11, nnz_global=X.nnz, positions=positions,
                                                        global_counts=counts)))
        return b.uniform_entries(), b.uniform_rows(5), b.normal_rows(2), g.get_state()

    whole = draws(None)
    parts = [draws(np.arange(r, 11, 3)) for r in range(3)]
    for r, part in enumerate(parts):
        rows = np.arange(r, 11, 3)
        entries = np.concatenate([np.arange(X.indptr[i], X.indptr[i + 1]) for i in rows])
        assert torch.equal(part[0], whole[0][entries])
        assert torch.equal(part[1], whole[1][rows]) and torch.equal(part[2], whole[2][rows])
        assert torch.equal(part[3], whole[3])  # every rank's generator in the same state


# ------------------------------------------------------------- torchrun + CLI
def _torchrun(args, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", AUTOREC_DIST_TIMEOUT="60",
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={WORLD}",
           "-m", "autorec", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=DEADLINE_S)


def test_cli_train_under_torchrun_is_one_process_run(tmp_path):
    from autorec.cli import main

    R = two_group_ratings(n_users=N_USERS, n_items=N_ITEMS)[0]
    coo = R.X.tocoo()
    pd.DataFrame({"user": R.users[coo.row], "item": R.items[coo.col], "rating": coo.data}).to_csv(
        tmp_path / "ratings.csv", index=False)
    train = ["train", "--model", "mult-dae", "--ratings", "ratings.csv", "--set", "dims=[8]",
             "--set", "epochs=3", "--set", "batch_size=8", "--set", "lr=0.01", "-q"]
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert main([*train, "--out", "one"]) == 0
    finally:
        os.chdir(cwd)
    done = _torchrun([*train, "--out", "two"], tmp_path)  # env:// rendezvous, no new flag
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("mult-dae on ratings.csv") == 1  # rank 0 prints, rank 1 does not
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
        p.name for p in (tmp_path / "one").iterdir())
    one, two = autorec.load(tmp_path / "one" / "model.pt"), autorec.load(tmp_path / "two" / "model.pt")
    for key, w in one.network_.state_dict().items():
        np.testing.assert_allclose(two.network_.state_dict()[key].numpy(), w.numpy(), rtol=0, atol=ATOL)
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert m2["ndcg@10"] == pytest.approx(m1["ndcg@10"], abs=1e-4)


# ------------------------------------------------------ the world, without processes
def test_world_comes_from_the_launchers_environment(monkeypatch):
    from autorec import distributed

    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.world() == distributed.World(4, 3, 1)
    assert not distributed.is_main() and distributed.world().distributed
    if torch.cuda.is_available():
        assert distributed.local_device(torch.device("cuda")) == torch.device("cuda", 1)
    assert distributed.local_device(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(DistributedError, match="MASTER_ADDR and MASTER_PORT not set: start the job with torchrun"):
        distributed.setup()
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(DistributedError, match=r"RANK=4 is not in \[0, WORLD_SIZE=4\)"):
        distributed.world()
    monkeypatch.setenv("AUTOREC_DIST_TIMEOUT", "soon")
    with pytest.raises(DistributedError, match="AUTOREC_DIST_TIMEOUT='soon'"):
        distributed.timeout_seconds()
    monkeypatch.setenv("AUTOREC_DIST_TIMEOUT", "30")
    assert distributed.timeout_seconds() == 30.0
    monkeypatch.delenv("WORLD_SIZE")
    assert distributed.world() == distributed.World() and distributed.is_main()  # RANK=4 alone: ignored


def test_a_lost_peer_becomes_one_clear_error_other_errors_pass(monkeypatch):
    from autorec import distributed

    with pytest.raises(DistributedError, match="rank 0 of 1: the loss all-reduce failed, so another rank died"):
        with distributed.collective("the loss all-reduce"):
            raise RuntimeError("[gloo/transport/tcp/pair.cc:537] Read error: Connection reset by peer")
    with pytest.raises(RuntimeError, match="shape mismatch") as info:
        with distributed.collective("the gradient all-reduce"):
            raise RuntimeError("shape mismatch")
    assert not isinstance(info.value, DistributedError)
