#!/usr/bin/env bash
# Wheels for a bare CUDA machine with torch (Python 3.12, x86-64, CUDA 13) that cannot reach PyPI: the GPU suite's
# only extra needs, diffusers and bitsandbytes, into DIR (default .whl/, git-ignored), small enough to travel with
# the repository in a 64 MiB upload. bitsandbytes ships one library per CUDA/ROCm/XPU version (43 MB); only the
# CUDA 13 ones are kept (~7 MB), and its RECORD lists exactly the files that remain, as pip checks it.
#
#   bash scripts/gpu_wheels.sh [DIR]          # here, where pip reaches PyPI
#   pip install --no-index --no-deps --target /tmp/site DIR/*.whl && export PYTHONPATH=/tmp/site   # there
set -euo pipefail
DIR=$(realpath -m "${1:-.whl}"); mkdir -p "$DIR"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  -d "$DIR" diffusers==0.42.1 bitsandbytes==0.50.2 importlib_metadata==10.2.0
python3 - "$DIR" <<'PY'
import sys, zipfile
from pathlib import Path

whl = next(Path(sys.argv[1]).glob("bitsandbytes-*.whl"))
def keep(name):  # every compiled library but CUDA 13's goes
    base = name.rsplit("/", 1)[-1]
    return not base.startswith("libbitsandbytes_") or base.startswith("libbitsandbytes_cuda13")
tmp = whl.with_suffix(".tmp")
with zipfile.ZipFile(whl) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
    for info in src.infolist():
        if not keep(info.filename):
            continue
        data = src.read(info)
        if info.filename.endswith(".dist-info/RECORD"):
            rows = [r for r in data.decode().splitlines() if r.strip() and keep(r.split(",", 1)[0])]
            data = ("\n".join(rows) + "\n").encode()
        dst.writestr(info, data)
tmp.replace(whl)
PY
du -ch "$DIR"/*.whl
