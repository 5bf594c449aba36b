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

__all__ = ["data_spec", "load_data", "make_protocol", "rebuild_split", "rebuild_data", "read_config",
           "config_if_any", "write_json", "versions", "DEFAULT_THRESHOLD", "NO_SPLIT", "all_data",
           "known_ratings", "run_folder"]

DEFAULT_THRESHOLD = 3.5  # ranking models on star ratings: keep ratings > 3.5 (Mult-VAE)
#: ``--protocol none``: train on all the data, no validation or test part (production)
NO_SPLIT = "none"


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
    explicit = R.nnz > 0 and not np.all(R.X.data == 1)
    if name == NO_SPLIT:
        if overrides:
            raise UsageError(f"--protocol none takes no --split parameters (got {', '.join(overrides)})")
        t = threshold if threshold is not None else (
            DEFAULT_THRESHOLD if explicit and not model.predicts_ratings else None)
        return all_data(R, t), {"name": NO_SPLIT, "kwargs": {"threshold": t}}
    if name == "strong" and model.predicts_ratings:
        raise UsageError(f"{type(model).__name__} predicts ratings; the strong protocol is for "
                         "ranking models (use --protocol autorec or per-user)")
    fn = PROTOCOLS[name]
    valid_keys = [p for p in inspect.signature(fn).parameters if p != "R"]
    kwargs = {"seed": seed}
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

def all_data(R, threshold=None):
    """``--protocol none``: a :class:`~autorec.protocols.Protocol` whose ``train`` is all
    of ``R`` (ratings ``> threshold`` as clicks when a threshold is given), with no
    validation and no test part."""
    from ..protocols import Protocol, binarize_above

    train = binarize_above(R, threshold) if threshold is not None else R
    return Protocol(NO_SPLIT, {"threshold": threshold}, train, None, None)


def rebuild_data(config: dict, *, download: bool = True):
    """All the ratings of a training run (checked against the shape it recorded)."""
    R = load_data(config["data"], download=download, progress=False)
    expected = config.get("data_shape")
    if expected and [R.n_users, R.n_items, R.nnz] != expected:
        raise RuntimeError(
            f"the data changed since training: {R.n_users:,} users x {R.n_items:,} items, "
            f"{R.nnz:,} ratings now; {expected[0]:,} x {expected[1]:,}, {expected[2]:,} then"
        )
    return R


def rebuild_split(config: dict, *, download: bool = True):
    """The data and protocol of a training run, from its ``config.json``."""
    from ..protocols import PROTOCOLS

    R = rebuild_data(config, download=download)
    proto = config["protocol"]
    if proto["name"] == NO_SPLIT:
        return R, all_data(R, **proto["kwargs"])
    return R, PROTOCOLS[proto["name"]](R, **proto["kwargs"])


def known_ratings(R, threshold, model):
    """What ``recommend`` scores from and what it excludes, for the users of ``R``.

    Returns ``(history, exclude)`` in the model's items: ``history`` is the data as the
    model reads it (ratings ``> threshold`` as clicks when the run used a threshold),
    ``exclude`` every rating of the users (None when that is ``history`` itself), so an
    item a user rated is never recommended, whatever its rating and whichever part of a
    split it fell in.
    """
    import warnings

    from ..protocols import binarize_above

    def in_model_items(M, quiet):
        if M.items.equals(model.items_):
            return M
        with warnings.catch_warnings():
            if quiet:  # items the model does not know cannot be recommended anyway
                warnings.simplefilter("ignore")
            return M.align(items=model.items_)[0]

    if threshold is None:
        return in_model_items(R, quiet=False), None
    history = in_model_items(binarize_above(R, threshold), quiet=False)
    return history, in_model_items(R, quiet=True)


def run_folder(out: Path, overwrite: bool):
    """A context manager: a temp folder beside ``out``, renamed onto it when complete.

    ``out`` must not exist or be an empty folder, unless ``overwrite`` (then the old
    folder is replaced whole once the new one is complete, never mixed with it).
    """
    import contextlib
    import os
    import shutil
    import tempfile

    check_run_folder(out, overwrite)

    @contextlib.contextmanager
    def folder():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        try:
            yield tmp
            os.chmod(tmp, 0o777 & ~_umask())
            if out.exists() and any(out.iterdir()):
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
                os.replace(out, old / out.name)
                os.replace(tmp, out)
                shutil.rmtree(old, ignore_errors=True)
            else:
                if out.exists():
                    out.rmdir()
                os.replace(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    return folder()


def check_run_folder(out: Path, overwrite: bool) -> None:
    """Refuse an ``--out`` that is a file, or a folder with files unless ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UsageError(f"--out {out} already holds files ({', '.join(sorted(p.name for p in out.iterdir())[:4])}"
                         f"); pass --overwrite to replace the folder whole, or choose another")


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask

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
