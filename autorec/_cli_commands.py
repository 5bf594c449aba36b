"""The work behind ``autorec train | evaluate | recommend``.

:mod:`autorec.cli` parses the command line and maps errors to exit codes; the functions
here take the parsed ``argparse.Namespace`` and return an exit code. A training run writes
``config.json`` with everything needed to rebuild its exact split, so ``evaluate`` and
``recommend`` find the same data from the model file alone.
"""
from __future__ import annotations

import difflib
import inspect
import json
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from ._io import atomic_path

__all__ = ["UsageError", "cmd_train", "cmd_evaluate", "cmd_recommend", "load_data",
           "make_protocol", "score_test_split", "versions"]

RANKING_KS = (10, 20, 50, 100)
DEFAULT_THRESHOLD = 3.5  # ranking models on star ratings: keep ratings > 3.5 (Mult-VAE)


class UsageError(ValueError):
    """A bad command-line argument (exit status 2)."""


# ---------------------------------------------------------------- data + protocol
def data_spec(args) -> dict:
    """The data options of the command line as a JSON-able dict (saved in config.json)."""
    if getattr(args, "dataset", None):
        return {"dataset": args.dataset,
                "data_dir": str(Path(args.data_dir).resolve()) if args.data_dir else None}
    return {"ratings": str(Path(args.ratings).resolve()), "sep": _separator(args.sep),
            "user": args.user, "item": args.item, "rating": _column(args.rating),
            "timestamp": args.timestamp, "header": not args.no_header}


def load_data(spec: dict, *, download: bool = True, progress: bool = True):
    """Read the ratings a :func:`data_spec` describes: a MovieLens name or a CSV file."""
    from .data import DataError, RatingMatrix

    if "dataset" in spec:
        from .movielens import load_movielens

        return load_movielens(spec["dataset"], spec.get("data_dir"), download=download, progress=progress)
    path = Path(spec["ratings"])
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ratings file")
    try:
        return RatingMatrix.from_csv(path, spec["user"], spec["item"], spec["rating"],
                                     spec["timestamp"], sep=spec["sep"], header=spec["header"])
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from None


def make_protocol(R, name: str | None, model, seed: int, threshold, overrides: dict):
    """Split ``R`` under a named protocol with the CLI defaults.

    Defaults: ``autorec`` for rating models, ``per-user`` for ranking models; ranking
    models on star ratings keep ratings ``> 3.5`` (``threshold``), on implicit data all.

    Returns
    -------
    (Protocol, dict)
        The split and the keyword arguments that rebuild it: ``PROTOCOLS[name](R, **kwargs)``.
    """
    from .protocols import PROTOCOLS

    name = name or ("autorec" if model.predicts_ratings else "per-user")
    if name == "strong" and model.predicts_ratings:
        raise UsageError(f"{type(model).__name__} predicts ratings; the strong protocol is for "
                         "ranking models (use --protocol autorec or per-user)")
    fn = PROTOCOLS[name]
    valid_keys = [p for p in inspect.signature(fn).parameters if p != "R"]
    kwargs = {"seed": seed}
    explicit = R.nnz > 0 and not np.all(R.X.data == 1)
    if name == "strong":
        kwargs["n_heldout"] = max(1, R.n_users // 10)
        kwargs["threshold"] = threshold if threshold is not None else (DEFAULT_THRESHOLD if explicit else 0.0)
    elif name == "per-user" and (threshold is not None or (explicit and not model.predicts_ratings)):
        kwargs["threshold"] = threshold if threshold is not None else DEFAULT_THRESHOLD
    for key, value in overrides.items():
        if key not in valid_keys:
            raise UsageError(_unknown_key(key, valid_keys, f"protocol {name!r}"))
        kwargs[key] = value
    return fn(R, **kwargs), {"name": name, "kwargs": kwargs}


def rebuild_split(config: dict, *, download: bool = True):
    """The data and protocol of a training run, from its ``config.json``."""
    from .protocols import PROTOCOLS

    R = load_data(config["data"], download=download, progress=False)
    expected = config.get("data_shape")
    if expected and [R.n_users, R.n_items, R.nnz] != expected:
        raise RuntimeError(
            f"the data changed since training: {R.n_users:,} users x {R.n_items:,} items, "
            f"{R.nnz:,} ratings now; {expected[0]:,} x {expected[1]:,}, {expected[2]:,} then"
        )
    proto = config["protocol"]
    return R, PROTOCOLS[proto["name"]](R, **proto["kwargs"])


def score_test_split(model, split) -> dict:
    """RMSE/MAE of rating models; NDCG/Recall@k of ranking models, on the test part."""
    from . import metrics

    history, target = split.test if isinstance(split.test, tuple) else (split.train, split.test)
    if model.predicts_ratings:
        return {"rmse": metrics.rmse(model, target), "mae": metrics.mae(model, target),
                "n_ratings": int(target.nnz)}
    result = metrics.evaluate(model, history, target, metrics=("ndcg", "recall"), ks=RANKING_KS)
    return result.to_dict()


# ---------------------------------------------------------------- train
def cmd_train(args) -> int:
    """``autorec train``: fit a model under a protocol, save model, config, history, metrics."""
    from . import __version__
    from .registry import MODELS

    model = MODELS[args.model]()
    params = parse_assignments(args.set, "--set")
    valid_keys = list(model.get_params())
    for key in params:
        if key not in valid_keys:
            raise UsageError(_unknown_key(key, valid_keys, f"model {args.model!r}"))
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


# ---------------------------------------------------------------- evaluate
def cmd_evaluate(args) -> int:
    """``autorec evaluate MODEL``: test metrics on the training run's split (or other data)."""
    from .base import load

    model = load(args.model_file)
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


# ---------------------------------------------------------------- recommend
def cmd_recommend(args) -> int:
    """``autorec recommend MODEL --out FILE``: top-k of every user, via export_topk."""
    from .base import load
    from .data import RatingMatrix
    from .export import export_topk
    from .protocols import binarize_above

    if not 0 <= args.shard < args.num_shards:
        raise UsageError(f"--shard must be in [0, {args.num_shards - 1}] for --num-shards {args.num_shards}")
    model = load(args.model_file)
    config = None if args.history else read_config(args.model_file)
    if args.history:
        history = load_data({"ratings": args.history, "sep": _separator(args.sep), "user": args.user,
                             "item": args.item, "rating": _column(args.rating),
                             "timestamp": args.timestamp, "header": not args.no_header})
        history, _ = history.align(items=model.items_)  # drops (and reports) unknown items
        config = _config_if_any(args.model_file)
        threshold = (config or {}).get("protocol", {}).get("kwargs", {}).get("threshold")
        if threshold is not None and not model.predicts_ratings and _column(args.rating):
            history = binarize_above(history, threshold)
        if args.titles and config is not None and "dataset" in config["data"]:
            info = load_data(config["data"], download=False, progress=False).item_info
            history = RatingMatrix(history.X, history.users, history.items, history.timestamps, info)
    else:
        _, split = rebuild_split(config, download=not args.no_download)
        history = split.train
    users = read_user_ids(args.users, history.users) if args.users else None
    path = export_topk(
        model, history, args.out, k=args.k, users=users, exclude_seen=not args.include_seen,
        batch_size=args.batch_size, format=args.format, num_shards=args.num_shards,
        shard=args.shard, item_titles=args.titles, progress=not args.quiet,
    )
    n_users = len(users) if users is not None else history.n_users
    part = f"part {args.shard} of {args.num_shards} of " if args.num_shards > 1 else ""
    print(f"wrote top-{args.k} recommendations for {part}{n_users:,} users to {path}")
    return 0


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


# ---------------------------------------------------------------- helpers
def parse_assignments(items, option: str) -> dict:
    """``["hidden=300", "lr=1e-3", "dims=[600,200]"]`` -> dict; values parsed as JSON
    when they are JSON (numbers, true/false/null, lists), else kept as strings."""
    out = {}
    for item in items or ():
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"{option} expects key=value, got {item!r}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = {"None": None, "True": True, "False": False}.get(text, text)
        out[key] = tuple(value) if isinstance(value, list) else value
    return out


def read_config(model_file) -> dict:
    config = _config_if_any(model_file)
    if config is None:
        raise FileNotFoundError(
            f"no config.json next to {model_file}; give the data with --dataset or --ratings "
            "(recommend: --history)"
        )
    return config


def _config_if_any(model_file) -> dict | None:
    path = Path(model_file).parent / "config.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None


def write_json(path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n", encoding="utf-8")


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)


def versions() -> dict:
    """Versions of Python and the libraries a result depends on."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("autorec", "numpy", "scipy", "pandas", "torch", "implicit", "pyarrow"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = None
    return out


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


def _unknown_key(key: str, valid: list, what: str) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown parameter {key!r} for {what}{hint}; valid: {', '.join(valid)}"


def _separator(sep: str) -> str:
    sep = {"tab": "\t", "\\t": "\t", "space": " ", "whitespace": r"\s+"}.get(sep, sep)
    if not sep:
        raise UsageError("--sep must not be empty")
    return sep


def _column(name):
    return None if name is None or name.lower() in ("", "none") else name


def _data_name(spec: dict) -> str:
    return spec["dataset"] if "dataset" in spec else Path(spec["ratings"]).name


def _is_int_text(text: str) -> bool:
    return text.lstrip("+-").isdigit()


def _note(args, text: str) -> None:
    if not args.quiet:
        print(text, file=sys.stderr)
