#!/usr/bin/env bash
# Creates bench/.venv with CPU PyTorch and numpy for the reference benchmark (bench/reference.py).
#
# torch comes from PyPI (the CUDA-enabled Linux wheel, which runs fine on the CPU; the
# download.pytorch.org CPU index is not reachable from this machine). About 3 GB to download,
# 5.4 GB on disk, ~3 minutes. Re-running is harmless: pip skips what is installed.
#
#   bench/setup.sh            # then: limaml bench
#   PYTHON=python3.12 bench/setup.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"
venv="$here/.venv"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --upgrade --quiet pip
"$venv/bin/python" -m pip install --quiet numpy torch
"$venv/bin/python" - <<'PY'
import numpy, torch
print(f"bench/.venv ready: torch {torch.__version__}, numpy {numpy.__version__}, "
      f"{torch.get_num_threads()} threads by default")
PY
