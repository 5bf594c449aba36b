"""The run folder of ``autorec train``: its config, and rebuilding its data and split.

A training run writes ``config.json`` with everything needed to rebuild its exact split
(the data source, the protocol and its parameters, the shape of the data), so
``evaluate`` and ``recommend`` find the same data from the model file alone.
"""
from __future__ import annotations

import inspect
import json
import platform
from importlib import metadata
from pathlib import Path

import numpy as np

from .._io import atomic_path
from .options import UsageError, column, separator, unknown_key

__all__ = ["data_spec", "load_data", "make_protocol", "rebuild_split", "read_config",
           "config_if_any", "write_json", "versions", "DEFAULT_THRESHOLD"]

DEFAULT_THRESHOLD = 3.5  # ranking models on star ratings: keep ratings > 3.5 (Mult-VAE)


def data_spec(args) -> dict:
    """The data options of the command line as a JSON-able dict (saved in config.json)."""
    if getattr(args, "dataset", None):
        return {"dataset": args.dataset,
                "data_dir": str(Path(args.data_dir).resolve()) if args.data_dir else None}
    return {"ratings": str(Path(args.ratings).resolve()), "sep": separator(args.sep),
            "user": args.user, "item": args.item, "rating": column(args.rating),
            "timestamp": args.timestamp, "header": not args.no_header}

def load_data(spec: dict, *, download: bool = True, progress: bool = True):
    """Read the ratings a :func:`data_spec` describes: a MovieLens name or a CSV file."""
    from ..data import RatingMatrix
    from ..exceptions import DataError

    if "dataset" in spec:
        from ..datasets import load_movielens

        return load_movielens(spec["dataset"], spec.get("data_dir"), download=download, progress=progress)
    path = Path(spec["ratings"])
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ratings file")
    try:
        return RatingMatrix.from_csv(path, spec["user"], spec["item"], spec["rating"],
                                     spec["timestamp"], sep=spec["sep"], header=spec["header"],
                                     id_dtype=spec.get("id_dtype", "str"))
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
    from ..protocols import PROTOCOLS

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
            raise UsageError(unknown_key(key, valid_keys, f"protocol {name!r}"))
        kwargs[key] = value
    return fn(R, **kwargs), {"name": name, "kwargs": kwargs}

def rebuild_split(config: dict, *, download: bool = True):
    """The data and protocol of a training run, from its ``config.json``."""
    from ..protocols import PROTOCOLS

    R = load_data(config["data"], download=download, progress=False)
    expected = config.get("data_shape")
    if expected and [R.n_users, R.n_items, R.nnz] != expected:
        raise RuntimeError(
            f"the data changed since training: {R.n_users:,} users x {R.n_items:,} items, "
            f"{R.nnz:,} ratings now; {expected[0]:,} x {expected[1]:,}, {expected[2]:,} then"
        )
    proto = config["protocol"]
    return R, PROTOCOLS[proto["name"]](R, **proto["kwargs"])

def read_config(model_file) -> dict:
    config = config_if_any(model_file)
    if config is None:
        raise FileNotFoundError(
            f"no config.json next to {model_file}; give the data with --dataset or --ratings "
            "(recommend: --history)"
        )
    return config

def config_if_any(model_file) -> dict | None:
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
