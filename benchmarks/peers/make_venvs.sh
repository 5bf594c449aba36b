#!/usr/bin/env bash
# Make one virtual environment per peer library under benchmarks/peers/.venvs/ (ignored by git):
#   surprise/  scikit-surprise (SVD, SVD++), numpy < 2 (its C extension is built against it)
#   recbole/   RecBole 1.2.1 (MultiVAE, MultiDAE, CDAE, RecVAE, EASE), numpy < 2
# implicit (ALS, BPR) is already a dependency of autorec and runs in the project venv.
# torch is the CPU build: `pip install torch==2.13.0` resolves to the CPU wheel here;
# never let pip pick a CUDA torch (it would download gigabytes).
# Usage: bash benchmarks/peers/make_venvs.sh [surprise|recbole ...]   (default: both)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
py="${PYTHON:-python3.11}"
venvs="$here/.venvs"
mkdir -p "$venvs"
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(surprise recbole)

make_surprise() {
  "$py" -m venv "$venvs/surprise"
  local pip="$venvs/surprise/bin/pip"
  "$pip" install -q "numpy==1.26.4" "cython==3.0.12" "setuptools" "wheel"
  # the sdist compiles against the numpy already installed (no build isolation)
  "$pip" install -q --no-build-isolation "scikit-surprise==1.1.4"
  "$pip" install -q "pandas==2.2.3" "scipy==1.13.1"
}

make_recbole() {
  "$py" -m venv "$venvs/recbole"
  local pip="$venvs/recbole/bin/pip"
  "$pip" install -q "torch==2.13.0"
  # RecBole 1.2.1 uses numpy 1 APIs (np.float etc. were removed in numpy 2) and pins
  # colorlog/colorama exactly; the rest pinned to releases known to work with it.
  "$pip" install -q "numpy==1.26.4" "scipy==1.13.1" "pandas==2.2.3" "scikit-learn==1.5.2" \
    "recbole==1.2.1" "colorlog==4.7.2" "colorama==0.4.4" "pyyaml==6.0.2" "tqdm==4.67.1" \
    "tabulate==0.9.0" "texttable==1.7.0" "thop==0.1.1.post2209072238" "psutil==6.1.1"
}

for t in "${targets[@]}"; do
  case "$t" in
    surprise) make_surprise ;;
    recbole) make_recbole ;;
    *) echo "unknown peer venv: $t (surprise | recbole)" >&2; exit 2 ;;
  esac
  echo "made $venvs/$t"
done
