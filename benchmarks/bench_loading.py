"""Time MovieLens loading: pandas' python engine for '::' vs autorec.load_movielens.

    AUTOREC_DATA=/path/to/archives python benchmarks/bench_loading.py

Rows: (a) the real ML-1M from $AUTOREC_DATA (skipped when absent); (b) a generated archive
with ML-10M's size and layout (10,000,054 ratings, 69,878 users, 10,677 items, '::',
half stars, ids spread like the real ones), written deterministically to a temp folder
and deleted afterwards. Columns: ``pd.read_csv(sep='::', engine='python')`` on the
ratings file (read from the zip, DataFrame only), then ``load_movielens`` cold (fresh
cache: digest, parse, build the RatingMatrix, movies, write the parsed cache) and warm
(from the parsed cache). Times are the median of the repeats; ratios are baseline / ours.
Writes benchmarks/results/loading.md.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from autorec._io import atomic_path
from autorec.datasets.movielens import DATASETS, load_movielens

ROOT = Path(__file__).resolve().parents[1]
ML10M = dict(n_ratings=10_000_054, n_users=69_878, n_items=10_677, user_id_max=71_567,
             item_id_max=65_133)  # id ranges of the real ML-10M


def load_make_fixtures():
    spec = importlib.util.spec_from_file_location(
        "make_fixtures", ROOT / "datasets" / "fixtures" / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def timed(function, repeats: int) -> tuple[float, object]:
    """Median wall time of ``repeats`` calls, and the last result."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def python_engine(path: Path, member: str) -> pd.DataFrame:
    with zipfile.ZipFile(path) as zf, zf.open(member) as fh:
        return pd.read_csv(fh, sep="::", engine="python", header=None,
                           names=["user", "item", "rating", "timestamp"])


def bench(name: str, folder: Path, cache_root: Path, repeats: int, baseline_repeats: int,
          verify: bool) -> dict:
    spec = DATASETS[name]
    archive = folder / spec.archive
    base_s, frame = timed(lambda: python_engine(archive, spec.ratings_file), baseline_repeats)
    print(f"  {name}: python engine {base_s:.2f} s", flush=True)
    caches = iter(range(10**6))

    def cold():  # a fresh, empty cache folder each time
        os.environ["AUTOREC_CACHE"] = str(cache_root / f"{name}-cold-{next(caches)}")
        return load_movielens(name, folder, download=False, verify=verify)

    cold_s, R = timed(cold, repeats)
    print(f"  {name}: load_movielens cold {cold_s:.2f} s", flush=True)
    warm_s, R_warm = timed(lambda: load_movielens(name, folder, download=False,
                                                  verify=verify), repeats)
    print(f"  {name}: load_movielens warm {warm_s:.2f} s", flush=True)
    assert len(frame) == R.nnz and np.isclose(frame["rating"].sum(), R.X.data.sum(dtype=np.float64))
    assert (R.X != R_warm.X).nnz == 0
    return {"name": name, "R": R, "python": base_s, "cold": cold_s, "warm": warm_s}


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines()
                    if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/loading.md")
    args = parser.parse_args(argv)
    started, load_before = time.time(), os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="autorec-bench-") as tmp:
        tmp = Path(tmp)
        data_dir = Path(os.environ.get("AUTOREC_DATA", "/nonexistent"))
        if (data_dir / "ml-1m.zip").is_file():
            rows.append(("ML-1M (real archive)",
                         bench("ml-1m", data_dir, tmp / "cache", args.repeats, 3, True)))
        else:
            print("ml-1m.zip not in $AUTOREC_DATA: skipping the real ML-1M row")
        print("generating an ML-10M-sized archive ...", flush=True)
        start = time.perf_counter()
        (tmp / "gen").mkdir()
        load_make_fixtures().write_archive(tmp / "gen" / "ml-10m.zip", "ml-10m", seed=0,
                                           compresslevel=1, **ML10M)
        print(f"  written in {time.perf_counter() - start:.1f} s", flush=True)
        result = bench("ml-10m", tmp / "gen", tmp / "cache", args.repeats, 1, False)
        R = result["R"]
        counts = (R.nnz, R.n_users, R.n_items)
        assert counts == (ML10M["n_ratings"], ML10M["n_users"], ML10M["n_items"]), counts
        half_stars = np.flatnonzero(np.bincount((R.X.data * 2).astype(np.int64)))
        assert half_stars.tolist() == list(range(1, 11)), half_stars
        rows.append(("ML-10M size and layout (generated)", result))
    lines = [
        "# MovieLens loading: pandas python engine vs `load_movielens`",
        "",
        "| data | ratings | `read_csv(sep='::', engine='python')` | `load_movielens` cold "
        "| `load_movielens` warm | cold speed-up | warm speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in rows:
        lines.append(f"| {label} | {r['R'].nnz:,} | {r['python']:.2f} s | {r['cold']:.2f} s "
                     f"| {r['warm']:.2f} s | {r['python'] / r['cold']:.1f}x "
                     f"| {r['python'] / r['warm']:.1f}x |")
    gen = rows[-1][1]["R"]
    lines += [
        "",
        f"Generated ML-10M loaded with exactly {gen.nnz:,} ratings, {gen.n_users:,} users "
        f"and {gen.n_items:,} items (asserted), half-star ratings 0.5-5.",
        "",
        "- Baseline: the ratings file read from the zip into a DataFrame, nothing more.",
        "- Cold: empty cache; archive md5 (and the ratings sha256 for ML-1M, verify=True),",
        "  pandas C parser with `sep=':'` on the even fields plus a separator count, the",
        "  RatingMatrix (ids to positions by lookup table, stable argsort of the (user, item)",
        "  key, CSR built directly), the movies file, and the `.npz` parsed cache written.",
        "- Warm: archive md5, the `.npz` read (`allow_pickle=False`), the movies file.",
        f"- Median of {args.repeats} runs ({'3' if len(rows) > 1 else '-'} baseline runs on "
        "ML-1M, 1 on ML-10M).",
        "",
        "Command: `AUTOREC_DATA=/work/shared/datasets .venv/bin/python "
        "benchmarks/bench_loading.py`",
        "",
        f"- Python {platform.python_version()}, pandas {pd.__version__}, numpy "
        f"{np.__version__}",
        f"- CPU: {cpu_model()}, {os.cpu_count()} cores (shared with other jobs: load average "
        f"{load_before[0]:.1f} at the start)",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M', time.localtime(started))}, run took "
        f"{time.time() - started:.0f} s",
        "",
    ]
    with atomic_path(args.out) as tmp_out:
        tmp_out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
