"""Import and start-up time: ``import autorec``, ``autorec --help``, ``--version``,
``datasets list``, in this checkout against the layout before the lazy imports
(commit e61f69e, where everything imported torch), in the same run.

Each command runs in a fresh interpreter (``python -c`` / ``python -m autorec``) with the
tree under test first on ``PYTHONPATH``; one warm-up run per command writes the bytecode
caches and is not counted, then ``--repeats`` runs alternate between the two trees and
the median wall time is reported (the OS file cache is warm for both: "cold" means a new
process, not a cold disk). Whether torch was imported is read from ``-X importtime``.

Run from a checkout: ``python benchmarks/bench_import.py`` (writes
``benchmarks/results/import.md``). The previous layout is checked out with
``git worktree add`` into a temp folder and removed afterwards.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _env import RESULTS, environment

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from autorec._io import atomic_path  # noqa: E402  (the checkout's; light: no torch)
BEFORE = "e61f69e"
COMMANDS = {
    "import autorec": ["-c", "import autorec"],
    "autorec --help": ["-m", "autorec", "--help"],
    "autorec --version": ["-m", "autorec", "--version"],
    "autorec datasets list": ["-m", "autorec", "datasets", "list"],
}
TARGET_S = 1.0  # the target for --help, --version and datasets list


def _env(tree: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1")
    env.pop("PYTHONSTARTUP", None)
    return env


def timed(tree: Path, args: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], cwd=tree, env=_env(tree), capture_output=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{args} failed in {tree}: {proc.stderr.decode()[-500:]}")
    return seconds


def imports_torch(tree: Path, args: list[str]) -> bool:
    proc = subprocess.run([sys.executable, "-X", "importtime", *args], cwd=tree, env=_env(tree),
                          capture_output=True, text=True)
    # lines read "import time: self | cumulative | <indent>module"; nested imports are indented
    return any(line.rsplit("|", 1)[-1].strip() == "torch" for line in proc.stderr.splitlines()
               if line.startswith("import time:"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/bench_import.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=7, help="timed runs per command and tree (default 7)")
    p.add_argument("--out", default=os.path.join(RESULTS, "import.md"))
    args = p.parse_args(argv)
    command = "python benchmarks/bench_import.py " + " ".join(argv if argv is not None else sys.argv[1:])
    tmp = Path(tempfile.mkdtemp(prefix="autorec-before-"))
    before = tmp / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(before), BEFORE], check=True)
    try:
        trees = {"before (e61f69e)": before, "now": ROOT}
        times = {(t, c): [] for t in trees for c in COMMANDS}
        torch_loaded = {(t, c): imports_torch(tree, a) for t, tree in trees.items() for c, a in COMMANDS.items()}
        for tree_name, tree in trees.items():  # warm-up: bytecode caches
            for cmd in COMMANDS.values():
                timed(tree, cmd)
        for _ in range(args.repeats):
            for name, cmd in COMMANDS.items():
                for tree_name, tree in trees.items():  # alternate: both see the same load
                    times[(tree_name, name)].append(timed(tree, cmd))
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)], check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    rows = ["| command | before (e61f69e): median s | imports torch | now: median s | imports torch | speed-up | target < 1 s |",
            "|---|---|---|---|---|---|---|"]
    for name in COMMANDS:
        b, n = (statistics.median(times[(t, name)]) for t in trees)
        target = "—" if name == "import autorec" else ("met" if n < TARGET_S else f"missed by {n - TARGET_S:.2f} s")
        rows.append(f"| `{name}` | {b:.3f} | {'yes' if torch_loaded[('before (e61f69e)', name)] else 'no'} | "
                    f"{n:.3f} | {'yes' if torch_loaded[('now', name)] else 'no'} | {b / n:.1f}x | {target} |")
    spread = "; ".join(f"{name} now {min(times[('now', name)]):.3f}-{max(times[('now', name)]):.3f} s"
                       for name in COMMANDS)
    text = ("# Import and start-up time\n\n" + environment(command)
            + f"\nMedian wall time of {args.repeats} fresh interpreters per command and tree "
              "(after one uncounted warm-up run each; the two trees alternate). "
              "'imports torch' is read from `python -X importtime`.\n\n"
            + "\n".join(rows) + f"\n\nRange of the timed runs: {spread}.\n")
    with atomic_path(args.out) as tmp_out:
        tmp_out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
