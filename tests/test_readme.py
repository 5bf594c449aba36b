"""Every ```python block of README.md runs, in order, in one namespace (so the README
cannot drift from the library).

The blocks load MovieLens 1M: the test reads it from ``$AUTOREC_DATA`` and is skipped
cleanly without it (never downloads). To stay quick, the one training loop of every torch
model (:class:`autorec.train.Trainer`) is capped at 2 epochs inside this test only; what
the blocks call, and what they return, is otherwise unchanged. The blocks write their
files (``vae.pt``, ``recs.parquet``, ``runs/``) in a temp folder.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
import pytest

import autorec
from autorec import train

README = Path(__file__).resolve().parents[1] / "README.md"
EPOCHS = 2


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_the_readme_has_python_blocks():
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 3 and all("autorec" in b for b in blocks)


def test_every_python_block_runs(tmp_path, monkeypatch):
    folder = os.environ.get("AUTOREC_DATA")
    if not folder or not (Path(folder) / "ml-1m.zip").exists():
        pytest.skip("AUTOREC_DATA does not point at a folder with ml-1m.zip")
    monkeypatch.setenv("AUTOREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("AUTOREC_MIRROR", "http://127.0.0.1:9/")  # never download
    monkeypatch.chdir(tmp_path)
    init = train.Trainer.__init__

    def capped(self, *, epochs, **kw):
        init(self, epochs=min(epochs, EPOCHS), **kw)

    monkeypatch.setattr(train.Trainer, "__init__", capped)
    namespace: dict = {}
    for number, block in enumerate(python_blocks(README.read_text(encoding="utf-8")), 1):
        try:
            exec(compile(block, f"README.md python block {number}", "exec"), namespace)  # noqa: S102
        except Exception as exc:  # name the block that drifted
            raise AssertionError(f"README python block {number} failed: {exc!r}\n{block}") from exc
    # what the blocks claim about the values they compute
    fold_in, test_users = namespace["fold_in"], namespace["test_users"]
    assert len(test_users) == 600
    recs = namespace["vae"].recommend_for(test_users[:5], fold_in, k=10)
    assert list(dict.fromkeys(recs["user"])) == list(test_users[:5])  # held-out users, not training ones
    assert recs.groupby("user")["item"].apply(tuple).nunique() == 5  # five different lists
    exported = pd.read_parquet(tmp_path / "recs.parquet")
    assert set(exported["user"]) == set(test_users) and len(exported) == 600 * 100
    ease, R = namespace["ease"], namespace["R"]
    lists = ease.recommend_for([1, 2], namespace["clicks"], k=10, exclude=R)
    rated = set(zip(*R.to_frame().query("user in [1, 2]")[["user", "item"]].T.values))
    assert not rated & set(zip(lists["user"], lists["item"]))
    assert (tmp_path / "runs" / "ease-search" / "trials.jsonl").exists()
    assert isinstance(namespace["search"].model, autorec.EASE)
