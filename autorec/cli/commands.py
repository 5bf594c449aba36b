"""The work behind ``autorec datasets | train | evaluate | recommend``.

:mod:`autorec.cli` parses the command line and maps errors to exit codes; the functions
here take the parsed ``argparse.Namespace`` and return an exit code.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pandas as pd

from .._io import atomic_path
from .._version import __version__
from .options import UsageError, column, parse_assignments, separator, unknown_key
from .runs import (
    config_if_any, data_spec, load_data, make_protocol, read_config, rebuild_split, versions,
    write_json,
)

__all__ = ["cmd_datasets", "cmd_train", "cmd_evaluate", "cmd_recommend", "score_test_split"]

RANKING_KS = (10, 20, 50, 100)


def cmd_datasets(args) -> int:
    """``autorec datasets list | download NAME | info NAME``."""
    from ..datasets import movielens

    if args.action == "list":
        rows = [(n, f"{s.n_ratings:,}", f"{s.n_users:,}", f"{s.n_items:,}",
                 "yes" if movielens.dataset_path(n, args.dir).is_file() else "no")
                for n, s in movielens.DATASETS.items()]
        _print_table(("name", "ratings", "users", "items", "available"), rows)
    elif args.action == "info":
        info = movielens.info(args.name)
        if args.json:
            print(json.dumps(info, indent=2, default=str))
        else:
            for key, value in info.items():
                print(f"{key}: {', '.join(map(str, value)) if isinstance(value, (list, tuple)) else value}")
    else:  # download
        found = movielens.dataset_path(args.name, args.dir)
        if found.is_file() and not args.force:
            print(f"{args.name} is already at {found} (use --force to download again)")
            return 0
        path = movielens.download(args.name, dest_dir=args.dir, progress=not args.quiet)
        print(f"downloaded {args.name} to {path}")
    return 0

def _print_table(header, rows) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    for row in (header, *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())


def score_test_split(model, split) -> dict:
    """RMSE/MAE of rating models; NDCG/Recall@k of ranking models, on the test part."""
    from .. import metrics

    history, target = split.test
    if model.predicts_ratings:
        return {"rmse": metrics.rmse(model, target), "mae": metrics.mae(model, target),
                "n_ratings": int(target.nnz)}
    result = metrics.evaluate(model, history, target, metrics=("ndcg", "recall"), ks=RANKING_KS)
    return result.to_dict()

def cmd_train(args) -> int:
    """``autorec train``: fit a model under a protocol, save model, config, history, metrics."""
    from ..distributed import is_main
    from ..models import get_model

    if not is_main():  # under torchrun every rank trains; rank 0 alone prints and writes
        args.quiet = True
    model = get_model(args.model)
    params = parse_assignments(args.set, "--set")
    valid_keys = list(model.get_params())
    for key in params:
        if key not in valid_keys:
            raise UsageError(unknown_key(key, valid_keys, f"model {args.model!r}"))
    if args.device is not None and "device" in valid_keys and "device" not in params:
        params["device"] = args.device
    if "seed" in valid_keys and "seed" not in params:
        params["seed"] = args.seed
    if args.quiet and "progress" in valid_keys and "progress" not in params:
        params["progress"] = False
    model.set_params(**params)
    split_overrides = parse_assignments(args.split, "--split")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")

    spec = data_spec(args)
    R = load_data(spec, download=not args.no_download, progress=not args.quiet)
    split, protocol = make_protocol(R, args.protocol, model, args.seed, args.threshold, split_overrides)
    _note(args, f"data: {R!r}\nprotocol: {split.describe()}")
    start = time.perf_counter()
    model.fit(split.train, split.valid)
    seconds = time.perf_counter() - start
    if not is_main():
        return 0
    scores = score_test_split(model, split)

    config = {
        "model": {"name": args.model, "class": type(model).__name__, "params": model.get_params()},
        "data": spec, "data_shape": [R.n_users, R.n_items, R.nnz],
        "protocol": protocol, "seed": args.seed, "train_seconds": round(seconds, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": ["autorec", *getattr(args, "argv", sys.argv[1:])],
        "versions": versions(), "autorec_version": __version__,
    }
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "model.pt")
    write_json(out / "config.json", config)
    write_json(out / "metrics.json", {"model": args.model, "protocol": protocol["name"],
                                      "part": "test", **scores})
    history = getattr(model, "history_", None)
    if history:
        with atomic_path(out / "history.csv") as tmp:
            pd.DataFrame(history).to_csv(tmp, index=False)
    print(metrics_table(scores, f"{args.model} on {_data_name(spec)}, {protocol['name']} protocol, "
                                f"trained in {seconds:.1f} s"))
    _note(args, f"wrote {out}/model.pt, config.json, metrics.json" + (", history.csv" if history else ""))
    return 0

def cmd_evaluate(args) -> int:
    """``autorec evaluate MODEL``: test metrics on the training run's split (or other data)."""
    from ..models import load

    model = load(args.model_file, device=args.device)
    name = type(model).__name__
    if args.dataset or args.ratings:
        spec = data_spec(args)
        R = load_data(spec, download=not args.no_download, progress=not args.quiet)
        split, protocol = make_protocol(R, args.protocol, model, args.seed, args.threshold,
                                        parse_assignments(args.split, "--split"))
    else:
        config = read_config(args.model_file)
        if args.protocol or args.split or args.threshold is not None:
            raise UsageError("--protocol/--split/--threshold need --dataset or --ratings "
                             "(without them the training run's split is rebuilt)")
        spec, protocol = config["data"], config["protocol"]
        name = config["model"]["name"]
        _, split = rebuild_split(config, download=not args.no_download)
    if not split.train.items.equals(model.items_):
        raise RuntimeError("the split's items differ from the model's: evaluate on the data "
                           "the model was trained on")
    scores = score_test_split(model, split)
    if args.json:
        print(json.dumps({"model": name, "protocol": protocol["name"], "part": "test", **scores}, indent=2))
    else:
        print(metrics_table(scores, f"{name} on {_data_name(spec)}, {protocol['name']} protocol"))
    return 0

def cmd_recommend(args) -> int:
    """``autorec recommend MODEL --out FILE``: top-k of every user, via export_topk."""
    from ..data import RatingMatrix
    from ..distributed import is_main
    from ..export import export_topk, manifest_path
    from ..models import load
    from ..protocols import binarize_above

    if not 0 <= args.shard < args.num_shards:
        raise UsageError(f"--shard must be in [0, {args.num_shards - 1}] for --num-shards {args.num_shards}")
    if not is_main():  # under torchrun each rank writes its part; rank 0 prints
        args.quiet = True
    model = load(args.model_file, device=args.device)
    config = None if args.history else read_config(args.model_file)
    if args.history:
        history = load_data({"ratings": args.history, "sep": separator(args.sep), "user": args.user,
                             "item": args.item, "rating": column(args.rating),
                             "timestamp": args.timestamp, "header": not args.no_header,
                             # ids typed as the model's, so its users and items are found
                             "id_dtype": {args.user: _csv_id_dtype(model.users_),
                                          args.item: _csv_id_dtype(model.items_)}})
        history, _ = history.align(items=model.items_)  # drops (and reports) unknown items
        config = config_if_any(args.model_file)
        threshold = (config or {}).get("protocol", {}).get("kwargs", {}).get("threshold")
        if threshold is not None and not model.predicts_ratings and column(args.rating):
            history = binarize_above(history, threshold)
        if args.titles and config is not None and "dataset" in config["data"]:
            info = load_data(config["data"], download=False, progress=False).item_info
            history = RatingMatrix(history.X, history.users, history.items, history.timestamps, info)
    else:
        _, split = rebuild_split(config, download=not args.no_download)
        history = split.train
    users = read_user_ids(args.users, history.users) if args.users else None
    manual = args.num_shards > 1  # else: one file, or under torchrun one part per rank
    path = export_topk(
        model, history, args.out, k=args.k, users=users, exclude_seen=not args.include_seen,
        batch_size=args.batch_size, format=args.format, num_shards=args.num_shards if manual else None,
        shard=args.shard if manual else None, item_titles=args.titles, progress=not args.quiet,
    )
    n_users = len(users) if users is not None else history.n_users
    part = f"part {args.shard} of {args.num_shards} of " if manual else ""
    if path != Path(args.out) and not manual:  # parts by rank, listed in the manifest
        path = f"{args.out} parts, listed in {manifest_path(args.out)}"
    if is_main():
        print(f"wrote top-{args.k} recommendations for {part}{n_users:,} users to {path}")
    return 0

def _csv_id_dtype(ids: pd.Index) -> str:
    """How to read a CSV's ids to match ``ids``: as int64/uint64 integers, else as text."""
    kind = getattr(ids.dtype, "kind", "O")
    return {"i": "int64", "u": "uint64"}.get(kind, "str")


def read_user_ids(path, known: pd.Index) -> list:
    """Raw user ids, one per line (blank lines and ``#`` comments skipped; an optional
    non-numeric header line when the ids are integers)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such users file")
    lines = [s.strip() for s in path.read_text(encoding="utf-8").splitlines()]
    ids = [s for s in lines if s and not s.startswith("#")]
    if pd.api.types.is_integer_dtype(known.dtype):
        if ids and not _is_int_text(ids[0]):
            ids = ids[1:]  # header
        bad = [s for s in ids if not _is_int_text(s)]
        if bad:
            raise ValueError(f"{path}: user ids must be integers for this model, got {bad[0]!r}")
        ids = [int(s) for s in ids]
    if not ids:
        raise ValueError(f"{path}: no user ids")
    return ids

def metrics_table(scores: dict, title: str) -> str:
    """Markdown: a title line, then one row per metric with its standard error."""
    lines = [title, ""]
    if "rmse" in scores:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {m} | {scores[m]:.4f} |" for m in ("rmse", "mae")]
        lines += ["", f"{scores['n_ratings']:,} test ratings"]
        return "\n".join(lines)
    lines += ["| metric | value | s.e. |", "|---|---|---|"]
    for name, value in scores.items():
        if "@" in name and not name.endswith("_se"):
            se = scores.get(f"{name}_se")
            lines.append(f"| {name} | {_fmt(value)} | {_fmt(se)} |")
    lines += ["", f"{scores['n_users']:,} users with test items evaluated"]
    return "\n".join(lines)

def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"

def _data_name(spec: dict) -> str:
    return spec["dataset"] if "dataset" in spec else Path(spec["ratings"]).name

def _is_int_text(text: str) -> bool:
    return text.lstrip("+-").isdigit()

def _note(args, text: str) -> None:
    if not args.quiet:
        print(text, file=sys.stderr)
