"""autorec.tune: search on the validation part only, trials journaled, resumable, best re-fit."""
from __future__ import annotations

import json

import numpy as np
import pytest

import autorec
from autorec import metrics, tuning
from autorec.protocols import autorec_protocol, per_user_holdout, strong_generalization
from autorec.tuning import Float, Int

from .conftest import block_clicks, two_group_ratings

SPACE = {"l2": [1.0, 10.0, 100.0, 1000.0]}


@pytest.fixture(scope="module")
def weak():
    return per_user_holdout(block_clicks(), test_size=0.2, valid_size=0.2, seed=0)


def test_the_function_survives_importing_its_module():
    import autorec.tuning  # noqa: F401  (a submodule import sets the package attribute)

    assert callable(autorec.tune) and autorec.tune is tuning.tune


def test_grid_tries_every_value_on_valid_and_refits_the_best(weak, tmp_path):
    seen = []
    real = metrics.evaluate

    def spy(model, history, target, **kw):
        seen.append(target)
        return real(model, history, target, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(metrics, "evaluate", spy)
        result = autorec.tune("ease", weak.train, weak.valid, SPACE, out=tmp_path)
    assert seen and all(t is weak.valid.target for t in seen)  # never the test part
    assert result.sampler == "grid" and list(result.trials["param.l2"]) == SPACE["l2"]
    values = result.trials["value"].to_numpy()
    assert result.best_value == values.max() and result.best_params == {"l2": SPACE["l2"][values.argmax()]}
    for l2, value in zip(SPACE["l2"], values):  # each trial is the model's own score
        m = autorec.EASE(l2=l2).fit(weak.train)
        assert value == pytest.approx(real(m, *weak.valid, metrics=("ndcg",), ks=(100,))["ndcg@100"])
    assert result.model.l2 == result.best_params["l2"] and hasattr(result.model, "items_")
    lines = (tmp_path / "trials.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["kind"] == "autorec-tune" and len(lines) == 1 + len(SPACE["l2"])


def test_rating_models_minimise_rmse_on_held_out_ratings():
    R, _, _ = two_group_ratings()
    p = autorec_protocol(R, seed=0)
    base = autorec.BiasedMF(epochs=3, lr=1e-2, progress=False)
    result = autorec.tune(base, p.train, p.valid, [{"factors": 0}, {"factors": 4, "l2": 0.01}])
    assert result.metric == "rmse" and result.lower_is_better
    assert result.best_value == result.trials["value"].min()
    assert result.best_value == pytest.approx(metrics.rmse(result.model, p.valid.target))
    assert result.params["epochs"] == 3  # the base model's parameters are kept


def test_fold_in_parts_of_held_out_users():
    p = strong_generalization(block_clicks(), n_heldout=8, threshold=0.5, min_user_ratings=2, seed=0)
    result = autorec.tune("ease", p.train, p.valid, {"l2": [1.0, 50.0]}, metric="recall@20")
    assert result.metric == "recall@20" and len(result.trials) == 2


def test_a_stopped_search_resumes_where_it_stopped(weak, tmp_path):
    full = autorec.tune("ease", weak.train, weak.valid, SPACE, refit=False)
    first = autorec.tune("ease", weak.train, weak.valid, SPACE, n_trials=2, out=tmp_path, refit=False)
    assert len(first.trials) == 2
    ran = []
    result = autorec.tune("ease", weak.train, weak.valid, SPACE, out=tmp_path, log=ran.append)
    assert result.resumed == 2 and sum(line.startswith("trial") for line in ran) == 2
    assert list(result.trials["number"]) == [0, 1, 2, 3]
    np.testing.assert_allclose(result.trials["value"], full.trials["value"])
    assert result.model is not None and result.model.l2 == full.best_params["l2"]
    # a kill in the middle of a line: that trial runs again, the others do not
    path = tmp_path / "trials.jsonl"
    text = path.read_text()
    path.write_text(text[: len(text) - 10])
    again = autorec.tune("ease", weak.train, weak.valid, SPACE, out=tmp_path, refit=False)
    assert again.resumed == 3 and len(again.trials) == 4


def test_a_journal_of_another_search_is_refused(weak, tmp_path):
    autorec.tune("ease", weak.train, weak.valid, SPACE, n_trials=1, out=tmp_path, refit=False)
    with pytest.raises(ValueError, match="another search"):
        autorec.tune("ease", weak.train, weak.valid, {"l2": [5.0]}, out=tmp_path)


def test_failed_trials_are_recorded_and_the_search_goes_on(weak):
    result = autorec.tune("ease", weak.train, weak.valid, {"l2": [-1.0, 10.0]})
    assert list(result.trials["state"]) == ["fail", "complete"]
    assert "l2" in result.trials["error"][0] and result.best_params == {"l2": 10.0}
    with pytest.raises(RuntimeError, match="no trial completed"):
        autorec.tune("ease", weak.train, weak.valid, {"l2": [-1.0]})


def test_ranges_are_sampled_by_optuna_within_bounds(weak):
    pytest.importorskip("optuna")
    space = {"l2": Float(1.0, 1000.0, log=True)}
    result = autorec.tune("ease", weak.train, weak.valid, space, n_trials=5, seed=3)
    assert result.sampler == "tpe" and len(result.trials) == 5
    assert ((result.trials["param.l2"] >= 1) & (result.trials["param.l2"] <= 1000)).all()
    again = autorec.tune("ease", weak.train, weak.valid, space, n_trials=5, seed=3)
    np.testing.assert_array_equal(result.trials["param.l2"], again.trials["param.l2"])  # seeded
    tpe = autorec.tune("ease", weak.train, weak.valid, SPACE, n_trials=3, sampler="tpe")
    assert tpe.sampler == "tpe" and set(tpe.trials["param.l2"]) <= set(SPACE["l2"])
    dae = autorec.MultDAE(epochs=2, progress=False)
    result = autorec.tune(dae, weak.train, weak.valid, {"dims": [(8,), (16,)], "dropout": Float(0.1, 0.5)},
                          n_trials=3)
    assert all(isinstance(v, list) for v in result.trials["param.dims"])
    assert isinstance(result.model.dims, tuple)


def test_without_optuna_grids_still_work_and_ranges_say_what_to_install(weak, monkeypatch):
    monkeypatch.setattr(tuning, "optuna_available", lambda: False)
    result = autorec.tune("ease", weak.train, weak.valid, SPACE)
    assert result.sampler == "grid" and len(result.trials) == 4
    subset = autorec.tune("ease", weak.train, weak.valid, SPACE, n_trials=2, seed=0, sampler="random")
    assert subset.sampler == "random" and len(set(subset.trials["param.l2"])) == 2
    with pytest.raises(ImportError, match="optuna"):
        autorec.tune("ease", weak.train, weak.valid, {"l2": Float(1.0, 10.0)}, n_trials=2)
    with pytest.raises(ImportError, match="optuna"):
        autorec.tune("ease", weak.train, weak.valid, SPACE, sampler="tpe")


@pytest.mark.parametrize("kwargs, match", [
    (dict(valid=None), "validation part"),
    (dict(space={"nope": [1]}), "no parameter 'nope'"),
    (dict(space={"l2": []}), "non-empty list"),
    (dict(space={"l2": Float(1.0, 2.0)}), "n_trials is needed"),
    (dict(metric="rmse"), "rating model"),
    (dict(metric="ndcg"), "cut-off"),
    (dict(sampler="grid", space={"l2": Int(1, 3)}, n_trials=2), "value lists"),
])
def test_bad_arguments_are_named(weak, kwargs, match):
    args = dict(valid=weak.valid, space=SPACE)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        autorec.tune("ease", weak.train, args.pop("valid"), args.pop("space"), **args)
