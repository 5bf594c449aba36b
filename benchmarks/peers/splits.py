"""The splits every side of the peer benchmark reads: written once to files, read by all.

- ``rating/``: ML-100K ratings, a seeded random 90/10 of all ratings
  (:func:`autorec.split.holdout`, the AutoRec protocol): ``train.tsv``, ``test.tsv``.
- ``topk/``: ML-100K ratings >= 4 as clicks, a seeded per-user 80/20
  (:func:`autorec.split.per_user`), and 10 % of each user's training clicks carved for
  validation (early stopping and best epoch): ``train.tsv``, ``valid.tsv``, ``test.tsv``,
  and the same three as RecBole atomic files ``recbole/ml100k/ml100k.{train,valid,test}.inter``
  (RecBole's ``benchmark_filename``).

Every file is tab-separated with a header, raw MovieLens ids (``user``, ``item``, and
``rating`` for the rating split). :func:`read_parts` reads them back as RatingMatrix objects
over one vocabulary, which is how our models and implicit see the same data as the peers.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd

__all__ = ["write_splits", "write_rating_split", "write_topk_split", "read_parts"]


def _write(frame: pd.DataFrame, path: Path) -> None:
    from autorec._io import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False)


def write_rating_split(R, out: Path, seed: int = 0) -> dict:
    """90/10 of all ratings of ``R`` to ``out/train.tsv``, ``out/test.tsv``; returns counts."""
    import autorec

    train, test = autorec.split.holdout(R, test_size=0.1, seed=seed)
    for name, part in (("train", train), ("test", test)):
        _write(part.to_frame(), Path(out) / f"{name}.tsv")
    return {"train": train.nnz, "test": test.nnz}


def write_topk_split(R, out: Path, seed: int = 0) -> dict:
    """Clicks (ratings >= 4), per-user 80/20, 10 % of each user's train to validation;
    our tsv files plus RecBole's atomic files. Returns counts."""
    import autorec
    from autorec.exceptions import SplitWarning

    with warnings.catch_warnings():  # one-click users stay in train; counted, not an error
        warnings.simplefilter("ignore", SplitWarning)
        clicks = R.binarize(4)
        train_full, test = autorec.split.per_user(clicks, test_size=0.2, seed=seed)
        train, valid = autorec.split.per_user(train_full, test_size=0.1, seed=seed)
    out = Path(out)
    counts = {}
    for name, part in (("train", train), ("valid", valid), ("test", test)):
        frame = part.to_frame()[["user", "item"]]
        _write(frame, out / f"{name}.tsv")
        atomic = frame.rename(columns={"user": "user_id:token", "item": "item_id:token"})
        _write(atomic, out / "recbole" / "ml100k" / f"ml100k.{name}.inter")
        counts[name] = part.nnz
    return counts


def write_splits(R, out: Path, seed: int = 0) -> dict:
    """Both splits of ``R`` (ML-100K) under ``out``: ``out/rating``, ``out/topk``."""
    return {"rating": write_rating_split(R, Path(out) / "rating", seed),
            "topk": write_topk_split(R, Path(out) / "topk", seed)}


def read_parts(folder: Path, names=("train", "valid", "test"), rating: bool = True) -> dict:
    """The parts in ``folder`` as RatingMatrix objects over one vocabulary (train's ids
    first, in file order); parts whose file is missing are skipped."""
    import autorec

    frames = {n: pd.read_csv(Path(folder) / f"{n}.tsv", sep="\t", dtype={"user": str, "item": str})
              for n in names if (Path(folder) / f"{n}.tsv").exists()}
    both = pd.concat(frames.values())
    users, items = pd.unique(both["user"]), pd.unique(both["item"])
    return {n: autorec.RatingMatrix.from_frame(f, rating="rating" if rating else None,
                                               users=users, items=items)[0]
            for n, f in frames.items()}
