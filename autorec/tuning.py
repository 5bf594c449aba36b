"""Hyperparameter search on a validation part: :func:`tune` (also ``autorec.tune``).

Every trial fits a copy of the model on ``train`` and scores it on ``valid`` (RMSE for
rating models on held-out ratings, NDCG@100 otherwise); the test part is never seen. The
samplers come from Optuna (TPE by default, seeded) when it is installed; a search space
of value lists is searched as a plain grid, with or without Optuna.

Trials are written, one JSON line each, to ``<out>/trials.jsonl`` as soon as they finish
(flushed and synced), so a search stopped at any point resumes from the same folder:
finished trials are read back and never run again (a grid resumes exactly where it
stopped; Optuna's sampler is handed the finished trials). The best configuration is then
fitted again (or kept from its trial when it ran in this process: fits are seeded, so the
two are the same model).

Search spaces::

    {"l2": [100.0, 300.0, 1000.0]}                    # a list: these values (a grid axis)
    {"lr": Float(1e-4, 1e-2, log=True),               # ranges: sampled (needs Optuna)
     "hidden": Int(100, 600, step=100)}
    [{"factors": 64}, {"factors": 128, "alpha": 10}]  # a list of configurations: each one

The module is called ``tuning`` so that ``autorec.tune`` stays the function (a submodule
named ``tune`` would replace the package attribute of that name when imported).
"""
from __future__ import annotations

import itertools
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Union

import numpy as np
import pandas as pd

from . import metrics as _metrics
from .data import RatingMatrix
from .protocols import EvalPart

__all__ = ["tune", "TuneResult", "Float", "Int", "TRIALS_FILE", "optuna_available"]

#: the journal of a search inside its ``out`` folder
TRIALS_FILE = "trials.jsonl"
_JOURNAL_VERSION = 1
#: parameters that do not change what a trial computes (a search resumes across them)
_NOT_SEARCH = ("progress",)


@dataclass(frozen=True)
class Float:
    """A range of floats ``[low, high]`` to sample (uniformly, or log-uniformly)."""

    low: float
    high: float
    log: bool = False

    def __post_init__(self):
        _check_range(self, float)


@dataclass(frozen=True)
class Int:
    """A range of integers ``[low, high]`` (with ``step``) to sample."""

    low: int
    high: int
    step: int = 1
    log: bool = False

    def __post_init__(self):
        _check_range(self, int)
        if not isinstance(self.step, int) or self.step < 1:
            raise ValueError(f"Int step must be a positive integer, got {self.step!r}")


Space = Union[dict, list]


@dataclass
class TuneResult:
    """What :func:`tune` found.

    Attributes
    ----------
    best_params : dict
        The searched parameters of the best trial.
    best_value : float
        Its validation score.
    metric : str
        The validation metric (``"rmse"``, ``"ndcg@100"`` ...).
    lower_is_better : bool
    trials : pandas.DataFrame
        One row per finished trial: ``number``, ``state`` (``"complete"``/``"fail"``),
        ``value``, ``seconds`` (of the fit), ``best_epoch``, ``error`` and one ``param.<name>`` column
        per searched parameter.
    model : BaseRecommender or None
        The best configuration, fitted on ``train`` (None with ``refit=False``).
    params : dict
        Every constructor parameter of the best model (the base model's, overridden).
    out : pathlib.Path or None
        The folder holding ``trials.jsonl``.
    sampler : str
        ``"grid"``, ``"tpe"`` or ``"random"``.
    """

    best_params: dict
    best_value: float
    metric: str
    lower_is_better: bool
    trials: pd.DataFrame
    model: object | None
    params: dict
    out: Path | None = None
    sampler: str = "grid"
    resumed: int = field(default=0)

    def summary(self) -> str:
        """One line: how many trials, the best score and its parameters."""
        done = int((self.trials["state"] == "complete").sum()) if len(self.trials) else 0
        return (f"{len(self.trials)} trials ({done} complete, {self.resumed} resumed), {self.sampler}: "
                f"best valid {self.metric} {self.best_value:.4f} with {self.best_params}")


def optuna_available() -> bool:
    """Whether Optuna can be imported (it is optional: grids work without it)."""
    try:
        import optuna  # noqa: F401
    except ImportError:
        return False
    return True


def tune(model, train: RatingMatrix, valid, space: Space, *, n_trials: int | None = None,
         metric: str = "auto", out=None, seed: int = 0, sampler: str = "auto",
         refit: bool = True, timeout: float | None = None,
         log: Callable[[str], None] | None = None) -> TuneResult:
    """Search hyperparameters of ``model`` on a validation part (never on test).

    Parameters
    ----------
    model : str or BaseRecommender
        A registry name (``"mult-vae"``) or an unfitted model whose parameters are the
        starting point (the searched ones override them; e.g. ``MultVAE(epochs=50)``).
    train : RatingMatrix
        What every trial is fitted on.
    valid : RatingMatrix or EvalPart
        Held-out ratings of the training users, or an
        :class:`~autorec.protocols.EvalPart` such as ``protocol.valid`` (held-out users
        folded in from their history). Torch models also stop early on it.
    space : dict or list of dict
        Parameter -> list of values, :class:`Float` or :class:`Int`; or a list of
        configurations (dicts) to try each.
    n_trials : int, optional
        Trials in all, those of a resumed search included. Default: the whole grid (a space
        of lists); required when the space has ranges.
    metric : str
        ``"auto"`` (RMSE for rating models on held-out ratings of training users, else
        NDCG@100), ``"rmse"``, ``"mae"``, or a ranking metric at a cut-off such as
        ``"recall@20"`` (see :func:`autorec.metrics.evaluate`).
    out : str or Path, optional
        Folder for ``trials.jsonl``; an existing journal of the same search is resumed,
        one of another search is refused. None keeps the trials in memory only.
    seed : int
        Seed of the sampler (the models keep their own ``seed`` parameter).
    sampler : {"auto", "grid", "tpe", "random"}
        ``"auto"``: the grid (in order; ``n_trials`` may stop it early) for a space of
        lists, TPE for ranges. ``"tpe"``/``"random"`` also choose among lists (Optuna;
        ``"random"`` without Optuna: the grid in a seeded random order).
    refit : bool
        Return the best configuration fitted on ``train`` (``result.model``).
    timeout : float, optional
        Start no new trial after this many seconds.
    log : callable, optional
        Called with one line per trial (e.g. ``print``).

    Returns
    -------
    TuneResult

    Raises
    ------
    ValueError
        No validation part, an empty or unknown parameter, a journal of another search.
    ImportError
        A space with ranges, or ``sampler="tpe"``, without Optuna installed.

    Examples
    --------
    >>> p = autorec.protocols.strong_generalization(R, n_heldout=600)      # doctest: +SKIP
    >>> result = autorec.tune("ease", p.train, p.valid, {"l2": [100.0, 500.0, 2000.0]},
    ...                       out="runs/ease-search")                      # doctest: +SKIP
    >>> result.best_params, result.model                                   # doctest: +SKIP
    """
    base = _base_model(model)
    part = _valid_part(train, valid)
    metric, lower = _metric(base, part, metric)
    configs, dists = _space(base, space)
    sampler = _choose_sampler(sampler, configs, n_trials)
    if n_trials is None:
        if configs is None:
            raise ValueError("n_trials is needed for a space with ranges (Float/Int)")
        n_trials = len(configs)
    if not isinstance(n_trials, (int, np.integer)) or isinstance(n_trials, bool) or n_trials < 1:
        raise ValueError(f"n_trials must be a positive integer, got {n_trials!r}")
    log = log or (lambda _msg: None)
    header = {"kind": "autorec-tune", "version": _JOURNAL_VERSION, "class": type(base).__name__,
              "base_params": _plain({k: v for k, v in base.get_params().items() if k not in _NOT_SEARCH}), "space": _describe_space(space),
              "metric": metric, "seed": seed, "sampler": sampler}
    journal = _Journal(out, header)
    done = journal.trials  # finished trials of earlier runs, in order
    resumed = len(done)
    if resumed:
        log(f"resuming: {resumed} finished trial(s) in {journal.path}")
    propose = _proposer(sampler, configs, dists, done, seed, lower)

    best_model, best = None, _best(done, lower)
    started = time.perf_counter()
    number = len(done)
    while number < n_trials:
        if timeout is not None and time.perf_counter() - started > timeout:
            log(f"timeout: {timeout:g} s passed, {number} of {n_trials} trials")
            break
        params = propose.next()
        if params is None:  # the grid is exhausted
            break
        record, fitted = _run_trial(base, params, train, valid, part, metric, number)
        journal.append(record)
        done.append(record)
        propose.tell(record)
        log(_trial_line(record, metric))
        if record["state"] == "complete" and (best is None or _better(record["value"], best["value"], lower)):
            best, best_model = record, fitted
        number += 1
    if best is None:
        errors = "; ".join(dict.fromkeys(t.get("error") or "" for t in done))
        raise RuntimeError(f"no trial completed ({len(done)} failed: {errors})")
    params = {**base.get_params(), **_decode(best["params"])}
    final = None
    if refit:
        final = best_model
        if final is None:  # the best trial ran in an earlier process: fit it again
            final = base.clone().set_params(**_decode(best["params"]))
            final.fit(train, valid)
    return TuneResult(best_params=_decode(best["params"]), best_value=float(best["value"]),
                      metric=metric, lower_is_better=lower, trials=_frame(done), model=final,
                      params=params, out=journal.folder, sampler=sampler, resumed=resumed)


# ------------------------------------------------------------------ a trial
def _run_trial(base, params: dict, train, valid, part: EvalPart, metric: str, number: int):
    """Fit and score one configuration; failures are recorded, not raised."""
    record = {"number": number, "params": _plain(params), "state": "complete", "value": None,
              "seconds": None, "best_epoch": None, "error": None}
    start = time.perf_counter()
    try:
        model = base.clone().set_params(**params)
        model.fit(train, valid)
        record["seconds"] = round(time.perf_counter() - start, 3)  # the fit alone
        value = _score(model, part, metric)
    except (ValueError, TypeError, ArithmeticError, RuntimeError, MemoryError) as exc:
        record.update(state="fail", error=f"{type(exc).__name__}: {' '.join(str(exc).split())}",
                      seconds=round(time.perf_counter() - start, 3))
        return record, None
    if not math.isfinite(value):
        record.update(state="fail", error=f"validation {metric} is {value}")
        return record, None
    record["value"] = float(value)
    record["best_epoch"] = getattr(model, "best_epoch_", None)
    return record, model


def _score(model, part: EvalPart, metric: str) -> float:
    """``metric`` of a fitted model on a validation part."""
    if metric in ("rmse", "mae"):
        return float(getattr(_metrics, metric)(model, part.target))
    name, _, k = metric.partition("@")
    result = _metrics.evaluate(model, part.history, part.target, metrics=(name,), ks=(int(k),))
    return float(result[metric])


def _trial_line(record: dict, metric: str) -> str:
    if record["state"] != "complete":
        return f"trial {record['number']} {record['params']}: failed ({record['error']})"
    epoch = f", best epoch {record['best_epoch']}" if record.get("best_epoch") else ""
    return (f"trial {record['number']} {record['params']}: valid {metric} {record['value']:.4f} "
            f"({record['seconds']:.1f} s{epoch})")


# ------------------------------------------------------------------ arguments
def _base_model(model):
    from .models import get_model
    from .models.base import BaseRecommender

    if isinstance(model, str):
        return get_model(model)
    if not isinstance(model, BaseRecommender):
        raise TypeError(f"model must be a registry name or an autorec model, got {type(model).__name__}")
    return model.clone()


def _valid_part(train, valid) -> EvalPart:
    if not isinstance(train, RatingMatrix):
        raise TypeError(f"train must be a RatingMatrix, got {type(train).__name__}")
    if valid is None:
        raise ValueError("tune needs a validation part (valid=protocol.valid, or held-out "
                         "ratings of the training users); it never looks at test")
    if isinstance(valid, RatingMatrix):
        return EvalPart(train, valid)
    if isinstance(valid, EvalPart):
        return valid
    raise TypeError(f"valid must be a RatingMatrix or an EvalPart, got {type(valid).__name__}")


def _metric(model, part: EvalPart, metric: str) -> tuple[str, bool]:
    from .ranking import PER_USER

    if metric == "auto":
        metric = "rmse" if model.predicts_ratings and not part.fold_in else "ndcg@100"
    if metric in ("rmse", "mae"):
        if not model.predicts_ratings:
            raise ValueError(f"metric {metric!r} needs a rating model; {type(model).__name__} ranks items")
        if part.fold_in:
            raise ValueError(f"metric {metric!r} needs held-out ratings of training users")
        return metric, True
    name, _, k = str(metric).partition("@")
    if name not in PER_USER or not k.isdigit() or int(k) < 1:
        raise ValueError(f"metric must be 'auto', 'rmse', 'mae' or a ranking metric at a cut-off "
                         f"({', '.join(PER_USER)} with @K, e.g. 'ndcg@100'), got {metric!r}")
    return metric, False


def _space(model, space) -> tuple[list[dict] | None, dict]:
    """(every configuration when the space is finite, else None; parameter -> spec)."""
    valid = list(model.get_params())
    if isinstance(space, (list, tuple)):
        if not space or not all(isinstance(c, dict) for c in space):
            raise ValueError("a space given as a list must be a non-empty list of configurations (dicts)")
        for config in space:
            _check_names(config, valid, model)
        return [dict(c) for c in space], {}
    if not isinstance(space, dict) or not space:
        raise ValueError("space must be a non-empty dict (parameter -> values) or a list of configurations")
    _check_names(space, valid, model)
    for name, spec in space.items():
        if isinstance(spec, (Float, Int)):
            continue
        if not isinstance(spec, (list, tuple)) or len(spec) == 0:
            raise ValueError(f"space[{name!r}] must be a non-empty list of values, Float or Int; got {spec!r}")
    if any(isinstance(s, (Float, Int)) for s in space.values()):
        return None, dict(space)
    names = list(space)
    return [dict(zip(names, values)) for values in itertools.product(*space.values())], dict(space)


def _check_names(config: dict, valid: list, model) -> None:
    for name in config:
        if name not in valid:
            raise ValueError(f"{type(model).__name__} has no parameter {name!r}; valid: {', '.join(valid)}")


def _choose_sampler(sampler: str, configs, n_trials) -> str:
    if sampler not in ("auto", "grid", "tpe", "random"):
        raise ValueError(f"sampler must be 'auto', 'grid', 'tpe' or 'random', got {sampler!r}")
    if sampler == "grid" and configs is None:
        raise ValueError("sampler='grid' needs a space of value lists (no Float/Int ranges)")
    if sampler == "auto":
        if configs is not None:
            return "grid"
        if optuna_available():
            return "tpe"
        if configs is None:
            raise ImportError("sampling Float/Int ranges needs Optuna (pip install optuna); "
                              "or give each parameter a list of values (a grid)")
        return "random"
    if configs is None and not optuna_available():
        raise ImportError("sampling Float/Int ranges needs Optuna (pip install optuna); "
                          "or give each parameter a list of values (a grid)")
    if sampler == "tpe" and not optuna_available():
        raise ImportError("sampler='tpe' needs Optuna (pip install optuna)")
    return sampler


# ------------------------------------------------------------------ samplers
class _Grid:
    """Each configuration once, in order, skipping those already finished."""

    def __init__(self, configs: list[dict], done: list[dict]):
        seen = {_key(t["params"]) for t in done}
        self._todo = [c for c in configs if _key(_plain(c)) not in seen]

    def next(self):
        return self._todo.pop(0) if self._todo else None

    def tell(self, record) -> None:
        pass


class _RandomGrid(_Grid):
    """A seeded random order of the grid (random search without Optuna)."""

    def __init__(self, configs, done, seed: int):
        order = np.random.default_rng(seed).permutation(len(configs))
        super().__init__([configs[i] for i in order], done)


class _Optuna:
    """Optuna's TPE or random sampler through ask/tell; finished trials are handed back."""

    def __init__(self, kind: str, configs, space: dict, done: list[dict], seed: int, lower: bool):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._optuna = optuna
        if configs is not None and not space:  # a list of configurations: choose one by index
            self._configs = configs
            self._dists = {"config": optuna.distributions.CategoricalDistribution(list(range(len(configs))))}
        else:
            self._configs = None
            self._dists, self._codecs = {}, {}
            for name, spec in space.items():
                self._dists[name], self._codecs[name] = _distribution(optuna, spec)
        sampler = (optuna.samplers.TPESampler(seed=seed) if kind == "tpe"
                   else optuna.samplers.RandomSampler(seed=seed))
        self.study = optuna.create_study(direction="minimize" if lower else "maximize", sampler=sampler)
        for record in done:
            self._add(record)
        self._trial = None

    def _internal(self, params: dict) -> dict:
        if self._configs is not None:
            plain = [_key(_plain(c)) for c in self._configs]
            return {"config": plain.index(_key(params))} if _key(params) in plain else None
        return {name: self._codecs[name][0](params[name]) for name in self._dists}

    def _add(self, record: dict) -> None:
        internal = self._internal(record["params"])
        if internal is None:
            return
        state = self._optuna.trial.TrialState
        try:
            trial = self._optuna.trial.create_trial(
                params=internal, distributions=self._dists,
                value=record["value"] if record["state"] == "complete" else None,
                state=state.COMPLETE if record["state"] == "complete" else state.FAIL)
        except ValueError:  # a value outside today's distributions: not informative
            return
        self.study.add_trial(trial)

    def next(self) -> dict:
        self._trial = self.study.ask(self._dists)
        if self._configs is not None:
            return dict(self._configs[self._trial.params["config"]])
        return {name: self._codecs[name][1](value) for name, value in self._trial.params.items()}

    def tell(self, record: dict) -> None:
        state = self._optuna.trial.TrialState
        if record["state"] == "complete":
            self.study.tell(self._trial, record["value"])
        else:
            self.study.tell(self._trial, state=state.FAIL)


def _distribution(optuna, spec):
    """(Optuna distribution, (encode, decode)) of one parameter's spec."""
    d = optuna.distributions
    same = (lambda v: v, lambda v: v)
    if isinstance(spec, Float):
        return d.FloatDistribution(spec.low, spec.high, log=spec.log), same
    if isinstance(spec, Int):
        return d.IntDistribution(spec.low, spec.high, log=spec.log, step=spec.step), same
    values = list(spec)
    if all(v is None or isinstance(v, (bool, int, float, str)) for v in values):
        return d.CategoricalDistribution(values), same
    # tuples (layer sizes) and other values: choose among their JSON texts
    texts = [json.dumps(_plain(v)) for v in values]
    return d.CategoricalDistribution(texts), (lambda v: json.dumps(_plain(v)),
                                              lambda t: values[texts.index(t)])


def _proposer(kind: str, configs, space: dict, done: list[dict], seed: int, lower: bool):
    if kind == "grid":
        return _Grid(configs, done)
    if not optuna_available():
        return _RandomGrid(configs, done, seed)
    return _Optuna(kind, configs, space, done, seed, lower)


# ------------------------------------------------------------------ the journal
class _Journal:
    """``trials.jsonl``: a header line describing the search, then one line per trial."""

    def __init__(self, out, header: dict):
        self.header = header
        self.trials: list[dict] = []
        self.folder = None if out is None else Path(out)
        self.path = None if out is None else self.folder / TRIALS_FILE
        if self.path is None:
            return
        if self.folder.exists() and not self.folder.is_dir():
            raise ValueError(f"{self.folder} exists and is not a folder")
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size > 0:
            self._read()
        else:
            self._write_line(header)

    def _read(self) -> None:
        lines = self.path.read_text(encoding="utf-8").splitlines()
        try:
            first = json.loads(lines[0])
        except (json.JSONDecodeError, IndexError):
            raise ValueError(f"{self.path}: not a trials journal of autorec.tune") from None
        ours = {k: v for k, v in self.header.items()}
        theirs = {k: first.get(k) for k in ours}
        if theirs != ours:
            diff = sorted(k for k in ours if theirs[k] != ours[k])
            raise ValueError(f"{self.path} holds another search (different {', '.join(diff)}); "
                             "use another folder, or remove it to start over")
        for n, line in enumerate(lines[1:], start=2):
            try:
                self.trials.append(json.loads(line))
            except json.JSONDecodeError:
                if n == len(lines):  # a line cut by a kill: that trial runs again
                    self._truncate(lines[:n - 1])
                    break
                raise ValueError(f"{self.path}: line {n} is not JSON") from None

    def _truncate(self, lines: list[str]) -> None:
        from ._io import atomic_path

        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")

    def append(self, record: dict) -> None:
        if self.path is not None:
            self._write_line(record)

    def _write_line(self, obj: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(obj, default=_json_default) + "\n")
            f.flush()
            os.fsync(f.fileno())


# ------------------------------------------------------------------ helpers
def _check_range(spec, kind) -> None:
    name = type(spec).__name__
    for value in (spec.low, spec.high):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or (kind is int and not isinstance(value, int)):
            raise ValueError(f"{name} bounds must be finite {'integers' if kind is int else 'numbers'}, "
                             f"got {spec.low!r}, {spec.high!r}")
    if spec.low > spec.high:
        raise ValueError(f"{name} low must be <= high, got {spec.low!r} > {spec.high!r}")
    if spec.log and spec.low <= 0:
        raise ValueError(f"{name} with log=True needs low > 0, got {spec.low!r}")


def _plain(value):
    """JSON-shaped values: tuples as lists, numpy scalars as Python numbers."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _decode(params: dict) -> dict:
    """Journal params back to constructor values (lists -> tuples)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}


def _key(params: dict) -> str:
    return json.dumps(_plain(params), sort_keys=True)


def _describe_space(space) -> object:
    if isinstance(space, dict):
        return {k: ({"range": type(v).__name__, **vars(v)} if isinstance(v, (Float, Int)) else _plain(v))
                for k, v in space.items()}
    return _plain(list(space))


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _better(a: float, b: float, lower: bool) -> bool:
    return a < b if lower else a > b


def _best(trials: list[dict], lower: bool):
    best = None
    for t in trials:
        if t["state"] == "complete" and (best is None or _better(t["value"], best["value"], lower)):
            best = t
    return best


def _frame(trials: list[dict]) -> pd.DataFrame:
    rows = [{"number": t["number"], "state": t["state"], "value": t["value"], "seconds": t["seconds"],
             "best_epoch": t.get("best_epoch"), "error": t.get("error"),
             **{f"param.{k}": v for k, v in t["params"].items()}} for t in trials]
    return pd.DataFrame(rows, columns=None if rows else ["number", "state", "value", "seconds",
                                                         "best_epoch", "error"])
