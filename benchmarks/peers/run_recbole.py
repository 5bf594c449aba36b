"""One RecBole model on the top-k split, in RecBole's own venv; prints one JSON line.

``.venvs/recbole/bin/python run_recbole.py SPLIT_DIR MultiVAE '{"epochs": 100}'`` (run by
``run_peers.py``, one process per model). RecBole reads the atomic files that
``splits.write_topk_split`` wrote from our split (``benchmark_filename``: train / valid /
test), validates NDCG@100 every epoch (full ranking), stops after ``stopping_step`` epochs
without a better one and keeps the best. Reported: the fit's wall time (``trainer.fit``,
validation included; building RecBole's dataset is timed apart as ``data_s``), the wall
time to the best validation, peak RSS, and the test NDCG@100 of RecBole's own evaluator
plus that of its top-100 lists (``full_sort_topk``, train + valid excluded) scored by
``common.ndcg_at_k``, the function that scores ours.

RecBole's checkpoint is a pickle of its own config, which torch >= 2.6 refuses by default;
it is our own file from seconds before, so this process loads it with
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` (this runner only, never the library).
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Clock, ndcg_at_k, peak_rss_mb  # noqa: E402


def main(split: str, model_name: str, params: str = "{}") -> None:
    t0 = time.perf_counter()
    import torch
    import recbole.config  # noqa: F401  (what a RecBole run imports, timed; not
    import recbole.data  # noqa: F401     recbole.quick_start, which needs pkg_resources)
    import recbole.utils  # noqa: F401

    import_s = time.perf_counter() - t0
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    extra = json.loads(params)
    with tempfile.TemporaryDirectory(prefix="recbole-") as work:  # its checkpoints
        _run(split, model_name, extra, work, import_s)


def _run(split: str, model_name: str, extra: dict, work: str, import_s: float) -> None:
    import pandas as pd
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed
    from recbole.utils.case_study import full_sort_topk

    config = Config(model=model_name, dataset="ml100k", config_dict={
        "data_path": str(Path(split) / "recbole"), "benchmark_filename": ["train", "valid", "test"],
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id",
        "load_col": {"inter": ["user_id", "item_id"]},
        "eval_args": {"group_by": "user", "order": "RO", "mode": "full"},
        "metrics": ["NDCG"], "topk": [100], "valid_metric": "NDCG@100",
        "eval_step": 1, "stopping_step": 10, "epochs": 100, "seed": 0, "reproducibility": True,
        "device": "cpu", "use_gpu": False, "show_progress": False, "checkpoint_dir": work,
        "log_wandb": False, "state": "WARNING", **extra,
    })
    init_seed(config["seed"], config["reproducibility"])
    start = time.perf_counter()
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    data_s = time.perf_counter() - start
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    clock = Clock()
    valid_epoch = trainer._valid_epoch

    def clocked(*args, **kwargs):  # time-stamp every validation
        score, result = valid_epoch(*args, **kwargs)
        clock.mark(score)
        return score, result
    trainer._valid_epoch = clocked
    clock.start()
    trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    fit_s = time.perf_counter() - clock.t0
    own = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    to_best, best_valid, best_epoch = clock.best()
    test = pd.read_csv(Path(split) / "test.tsv", sep="\t", dtype=str)
    relevant = test.groupby("user")["item"].apply(set).to_dict()
    users = list(relevant)
    uid = torch.as_tensor(dataset.token2id(dataset.uid_field, users))
    _, iids = full_sort_topk(uid, trainer.model, test_data, k=100, device=config["device"])
    tokens = dataset.id2token(dataset.iid_field, iids.cpu().numpy())
    topk = {u: list(row) for u, row in zip(users, tokens)}
    print(json.dumps({"side": "RecBole", "model": model_name, "params": extra, "import_s": import_s,
                      "data_s": data_s, "fit_s": fit_s, "to_best_s": to_best, "best_epoch": best_epoch,
                      "epochs_run": len(clock.marks), "valid_ndcg@100": best_valid,
                      "ndcg@100": ndcg_at_k(topk, relevant, 100),
                      "recbole_ndcg@100": float(own["ndcg@100"]), "peak_rss_mb": peak_rss_mb()}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
