"""One Surprise model on the rating split, in Surprise's own venv; prints one JSON line.

Run by ``benchmarks/peers/run_peers.py`` (one process per model, so the peak RSS is the
model's): ``.venvs/surprise/bin/python run_surprise.py SPLIT_DIR svd|svdpp '{"n_factors": 100}'``.
The fit is timed alone (reading the files is not); RMSE on the test file by Surprise's own
``accuracy.rmse`` (predictions clipped to the rating scale, unknown users/items get the
biases that are known, as ours).
"""
from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path


def main(split: str, model: str, params: str) -> None:
    t0 = time.perf_counter()
    import pandas as pd
    from surprise import SVD, Dataset, Reader, SVDpp, accuracy

    import_s = time.perf_counter() - t0
    kwargs = json.loads(params)
    read = lambda name: pd.read_csv(Path(split) / f"{name}.tsv", sep="\t",  # noqa: E731
                                    dtype={"user": str, "item": str})
    train, test = read("train"), read("test")
    reader = Reader(rating_scale=(float(train.rating.min()), float(train.rating.max())))
    trainset = Dataset.load_from_df(train[["user", "item", "rating"]], reader).build_full_trainset()
    testset = list(zip(test.user, test.item, test.rating.astype(float)))
    algo = {"svd": SVD, "svdpp": SVDpp}[model](random_state=0, **kwargs)
    start = time.perf_counter()
    algo.fit(trainset)
    fit_s = time.perf_counter() - start
    rmse = accuracy.rmse(algo.test(testset), verbose=False)
    print(json.dumps({"side": "Surprise", "model": model, "params": kwargs, "fit_s": fit_s,
                      "import_s": import_s, "rmse": rmse,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
