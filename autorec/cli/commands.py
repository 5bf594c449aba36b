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

__all__ = ["cmd_datasets", "cmd_train", "cmd_evaluate", "cmd_recommend", "cmd_tune", "score_test_split",
           "configured_model"]

RANKING_KS = (10, 20, 50, 100)
RANKING_METRICS = ("ndcg", "recall", "recall_plain")
RECALL_NOTE = ("recall@k is the normalised recall of Liang et al. 2018, hits / min(k, test items); "
               "recall_plain@k is hits / test items")


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
                label = "protocols (--protocol)" if key == "protocols" else key
                print(f"{label}: {', '.join(map(str, value)) if isinstance(value, (list, tuple)) else value}")
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
    """RMSE/MAE of rating models; NDCG/Recall@k of ranking models, on the test part.

    ``recall@k`` is the normalised recall of Liang et al. (hits / min(k, #test items));
    ``recall_plain@k`` divides by the number of test items.
    """
    from .. import metrics

    history, target = split.test
    if model.predicts_ratings:
        return {"rmse": metrics.rmse(model, target), "mae": metrics.mae(model, target),
                "n_ratings": int(target.nnz)}
    result = metrics.evaluate(model, history, target, metrics=RANKING_METRICS, ks=RANKING_KS)
    return result.to_dict()


def configured_model(args):
    """The model of ``--model`` with ``--set`` (type-checked) and the shared options."""
    from ..distributed import is_main
    from ..models import get_model
    from .options import typed_params

    if not is_main():  # under torchrun every rank trains; rank 0 alone prints and writes
        args.quiet = True
    model = get_model(args.model)
    params = parse_assignments(args.set, "--set")
    defaults = model.get_params()
    valid_keys = list(defaults)
    for key in params:
        if key not in valid_keys:
            raise UsageError(unknown_key(key, valid_keys, f"model {args.model!r}"))
    params = typed_params(params, defaults)
    if args.device is not None and "device" in valid_keys and "device" not in params:
        params["device"] = args.device
    if "seed" in valid_keys and "seed" not in params:
        params["seed"] = args.seed
    if args.quiet and "progress" in valid_keys and "progress" not in params:
        params["progress"] = False
    model.set_params(**params)
    try:
        model._check_params()  # every rule now, before any data is read
    except (ValueError, TypeError) as exc:
        raise UsageError(f"--set: {exc}") from None
    return model


def cmd_train(args) -> int:
    """``autorec train``: fit a model under a protocol, save model, config, history, metrics."""
    from ..distributed import is_main
    from .runs import NO_SPLIT, check_run_folder, run_folder

    model = configured_model(args)
    split_overrides = parse_assignments(args.split, "--split")
    out = Path(args.out)
    check_run_folder(out, args.overwrite)
    fit_kwargs = _checkpoint_options(args, model, out)

    spec = data_spec(args)
    R = load_data(spec, download=not args.no_download, progress=not args.quiet)
    split, protocol = make_protocol(R, args.protocol, model, args.seed, args.threshold, split_overrides)
    _note(args, f"data: {R!r}\nprotocol: {split.describe()}")
    start = time.perf_counter()
    model.fit(split.train, split.valid, **fit_kwargs)
    seconds = time.perf_counter() - start
    if not is_main():
        return 0
    if protocol["name"] == NO_SPLIT:
        scores = None
        metrics = {"model": args.model, "protocol": NO_SPLIT, "part": None,
                   "note": "trained on all the data: there is no test part, so nothing was measured"}
    else:
        scores = score_test_split(model, split)
        metrics = {"model": args.model, "protocol": protocol["name"], "part": "test", **scores}

    config = {
        "model": {"name": args.model, "class": type(model).__name__, "params": model.get_params()},
        "data": spec, "data_shape": [R.n_users, R.n_items, R.nnz],
        "protocol": protocol, "seed": args.seed, "train_seconds": round(seconds, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": ["autorec", *getattr(args, "argv", sys.argv[1:])],
        "versions": versions(), "autorec_version": __version__,
    }
    history = getattr(model, "history_", None)
    with run_folder(out, args.overwrite) as tmp:  # the folder appears whole, or not at all
        model.save(tmp / "model.pt")
        write_json(tmp / "config.json", config)
        write_json(tmp / "metrics.json", metrics)
        if history:
            pd.DataFrame(history).to_csv(tmp / "history.csv", index=False)
    title = f"{args.model} on {_data_name(spec)}"
    if scores is None:
        print(f"{title}, trained on all the data ({split.describe()}) in {seconds:.1f} s; "
              "no test part (--protocol none): nothing measured")
    else:
        print(metrics_table(scores, f"{title}, {protocol['name']} protocol, trained in {seconds:.1f} s"))
    _note(args, f"wrote {out}/model.pt, config.json, metrics.json" + (", history.csv" if history else ""))
    return 0


def _checkpoint_options(args, model, out: Path) -> dict:
    """``--checkpoint PATH [--resume]`` as fit's keyword arguments (torch models only)."""
    import inspect

    if args.resume and not args.checkpoint:
        raise UsageError("--resume needs --checkpoint PATH (the checkpoint to continue from)")
    if not args.checkpoint:
        return {}
    if "checkpoint" not in inspect.signature(model.fit).parameters:
        from ..models import MODEL_NAMES, model_class

        epochwise = [n for n in MODEL_NAMES if "checkpoint" in inspect.signature(model_class(n).fit).parameters]
        raise UsageError(f"--checkpoint: {type(model).__name__} is not trained epoch by epoch "
                         f"(models that are: {', '.join(epochwise)})")
    path = Path(args.checkpoint).resolve()
    if path.is_dir():
        raise UsageError(f"--checkpoint {path} is a folder; give a file name")
    if out.resolve() in path.parents:
        raise UsageError("--checkpoint must be outside --out (the run folder is written whole when "
                         "training ends)")
    if args.resume and not path.exists():
        _note(args, f"no checkpoint at {path} yet: training from the start")
    return {"checkpoint": path, "resume": bool(args.resume)}


def cmd_evaluate(args) -> int:
    """``autorec evaluate MODEL``: test metrics on the training run's split (or other data)."""
    from ..models import load

    model = load(args.model_file, device=args.device)
    name = type(model).__name__
    if args.protocol == "none":
        raise UsageError("--protocol none has no test part to evaluate on")
    if args.dataset or args.ratings:
        spec = data_spec(args)
        R = load_data(spec, download=not args.no_download, progress=not args.quiet)
        split, protocol = make_protocol(R, args.protocol, model, args.seed, args.threshold,
                                        parse_assignments(args.split, "--split"))
    else:
        config = read_config(args.model_file)
        if config["protocol"]["name"] == "none":
            raise UsageError(f"{args.model_file} was trained on all the data (--protocol none): there "
                             "is no test part to evaluate on; train under a protocol to measure it")
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
    """``autorec recommend MODEL --out FILE``: top-k of every user, via export_topk.

    By default every item a user rated anywhere in the data (the whole data set rebuilt
    from config.json, or the ``--history`` file) is excluded, whatever its rating and
    whichever part of the training run's split it fell in.
    """
    from ..data import RatingMatrix
    from ..distributed import is_main
    from ..export import FORMATS, export_topk, manifest_path
    from ..models import load
    from .runs import known_ratings, rebuild_data

    if not 0 <= args.shard < args.num_shards:
        raise UsageError(f"--shard must be in [0, {args.num_shards - 1}] for --num-shards {args.num_shards}")
    name = Path(args.out).name.lower()
    if args.format is None and not any(name.endswith(ext) for ext in FORMATS):
        raise UsageError(f"--out {args.out}: cannot tell the format from the name; end it with "
                         f"{', '.join(FORMATS)}, or give --format csv|parquet|jsonl")
    if not is_main():  # under torchrun each rank writes its part; rank 0 prints
        args.quiet = True
    model = load(args.model_file, device=args.device)
    config = config_if_any(args.model_file) if args.history else read_config(args.model_file)
    threshold = (config or {}).get("protocol", {}).get("kwargs", {}).get("threshold")
    if args.history:
        R = load_data({"ratings": args.history, "sep": separator(args.sep), "user": args.user,
                       "item": args.item, "rating": column(args.rating),
                       "timestamp": args.timestamp, "header": not args.no_header,
                       # ids typed as the model's, so its users and items are found
                       "id_dtype": {args.user: _csv_id_dtype(model.users_),
                                    args.item: _csv_id_dtype(model.items_)}})
        if not column(args.rating):
            threshold = None  # clicks already
        if args.titles and config is not None and "dataset" in config["data"]:
            info = load_data(config["data"], download=False, progress=False).item_info
            R = RatingMatrix(R.X, R.users, R.items, R.timestamps, info)
    else:
        R = rebuild_data(config, download=not args.no_download)
    history, exclude = known_ratings(R, threshold, model)
    if args.titles and R.item_info is not None and history.item_info is None:
        history = RatingMatrix(history.X, history.users, history.items, history.timestamps, R.item_info)
    users = read_user_ids(args.users, history.users) if args.users else None
    manual = args.num_shards > 1  # else: one file, or under torchrun one part per rank
    path = export_topk(
        model, history, args.out, k=args.k, users=users, exclude_seen=not args.include_seen,
        batch_size=args.batch_size, format=args.format, num_shards=args.num_shards if manual else None,
        shard=args.shard if manual else None, item_titles=args.titles, progress=not args.quiet,
        exclude=None if args.include_seen else exclude,
    )
    n_users = len(users) if users is not None else history.n_users
    part = f"part {args.shard} of {args.num_shards} of " if manual else ""
    if path != Path(args.out) and not manual:  # parts by rank, listed in the manifest
        path = f"{args.out} parts, listed in {manifest_path(args.out)}"
    source = "the --history file" if args.history else "all the data, not only the training part"
    excluded = ("; items the users rated are included (--include-seen)" if args.include_seen
                else f"; every item each user rated is excluded ({source})")
    if is_main():
        print(f"wrote top-{args.k} recommendations for {part}{n_users:,} users to {path}{excluded}")
    return 0


def _csv_id_dtype(ids: pd.Index) -> str:
    """How to read a CSV's ids to match ``ids``: as int64/uint64 integers, else as text."""
    kind = getattr(ids.dtype, "kind", "O")
    return {"i": "int64", "u": "uint64"}.get(kind, "str")


def cmd_tune(args) -> int:
    """``autorec tune``: search hyperparameters on the validation part, re-fit the best.

    The folder gets ``trials.jsonl`` (one line per finished trial: run the same command
    again to resume an interrupted search), ``trials.csv``, ``best.json``, and the best
    model as a run folder: ``model.pt``, ``config.json`` (the split, so ``autorec evaluate``
    scores it on test once), ``metrics.json`` (its validation score).
    """
    import shutil

    from ..tuning import TRIALS_FILE, tune
    from .options import parse_space

    model = configured_model(args)
    space = parse_space(args.space, model.get_params())
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if args.overwrite:
            shutil.rmtree(out)
        elif not (out / TRIALS_FILE).exists():
            raise UsageError(f"--out {out} already holds files and no {TRIALS_FILE}; pass --overwrite "
                             "to replace it, or choose another folder")
    overrides = parse_assignments(args.split, "--split")
    spec = data_spec(args)
    R = load_data(spec, download=not args.no_download, progress=not args.quiet)
    if args.protocol == "none":
        raise UsageError("tune needs a validation part: --protocol none has none")
    split, protocol = make_protocol(R, args.protocol, model, args.seed, args.threshold, overrides)
    if split.valid is None:
        if "valid_size" in overrides:
            raise UsageError("tune needs a validation part: --split valid_size must be > 0")
        split, protocol = make_protocol(R, args.protocol, model, args.seed, args.threshold,
                                        {**overrides, "valid_size": 0.1})
    _note(args, f"data: {R!r}\nprotocol: {split.describe()}\nsearching on the validation part only")
    start = time.perf_counter()
    result = tune(model, split.train, split.valid, space, n_trials=args.trials, metric=args.metric,
                  out=out, seed=args.seed, sampler=args.sampler, timeout=args.timeout,
                  log=lambda line: _note(args, line))
    seconds = time.perf_counter() - start
    best = result.model
    search = {"space": args.space, "sampler": result.sampler, "metric": result.metric,
              "n_trials": len(result.trials), "best_params": result.best_params,
              "best_value": result.best_value, "seconds": round(seconds, 3)}
    config = {
        "model": {"name": args.model, "class": type(best).__name__, "params": best.get_params()},
        "data": spec, "data_shape": [R.n_users, R.n_items, R.nnz], "protocol": protocol,
        "seed": args.seed, "tune": search, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": ["autorec", *getattr(args, "argv", sys.argv[1:])],
        "versions": versions(), "autorec_version": __version__,
    }
    best.save(out / "model.pt")
    write_json(out / "config.json", config)
    write_json(out / "best.json", {"params": result.best_params, "metric": result.metric,
                                   "value": result.best_value, "part": "valid"})
    write_json(out / "metrics.json", {"model": args.model, "protocol": protocol["name"], "part": "valid",
                                      result.metric: result.best_value})
    with atomic_path(out / "trials.csv") as tmp:
        result.trials.to_csv(tmp, index=False)
    ranked = result.trials[result.trials["state"] == "complete"].sort_values(
        "value", ascending=result.lower_is_better).head(10)
    params = [c for c in result.trials.columns if c.startswith("param.")]
    print(f"{args.model} on {_data_name(spec)}, {protocol['name']} protocol: {result.summary()}\n")
    print("| trial | " + " | ".join(c[len('param.'):] for c in params) + f" | valid {result.metric} | s |")
    print("|---" * (len(params) + 3) + "|")
    for _, row in ranked.iterrows():
        print(f"| {row['number']} | " + " | ".join(_cell(row[c]) for c in params)
              + f" | {row['value']:.4f} | {row['seconds']:.1f} |")
    print(f"\nthe best configuration is in {out}/model.pt; its test score: autorec evaluate {out}/model.pt")
    return 0


def _cell(value) -> str:
    return json.dumps(value) if isinstance(value, (list, tuple)) else str(value)


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
    if any(name.startswith("recall") for name in scores):
        lines.append(RECALL_NOTE)
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
