#!/usr/bin/env bash
# The one device check of lottery_rg on a machine with one H100/H200 (see benchmarks/gpu_check.py).
#
# That machine has Python 3.12 and torch 2.11 (CUDA) with transformers 5.17, accelerate 1.15, timm, torchvision,
# huggingface_hub, safetensors, scipy, pandas, matplotlib, scikit-learn and tensorboard preinstalled, but not
# `datasets` (nor, perhaps, pytest), and no network. `bash benchmarks/gpu_wheels.sh` on the development machine
# writes wheels/ (ignored by git, about 60 MB: datasets 4.0.0 at our floor and its dependencies, pytest, for
# CPython 3.12 on manylinux x86-64); carry `wheels` with the working tree. This script installs from it, offline,
# only what the image is missing (anything already there is kept). Then, on the GPU machine:
#
#   bash benchmarks/gpu_check.sh              # report in $OUT (gpu_check.json + gpu_check.md)
#   bash benchmarks/gpu_check.sh --only step_ratio global_prune    # any gpu_check.py flags pass through
#   bash benchmarks/gpu_check.sh --device cpu --quick              # the dry run (any machine, small sizes)
#
# Budget: under 8 minutes in all (install ~30 s, checks ~5-6 min on an H100).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
{
  echo "== install $(date -u +%FT%TZ)"
  need=()
  "$PY" -c "import datasets" 2>/dev/null || need+=("datasets>=4.0.0")
  "$PY" -c "import pytest" 2>/dev/null || need+=("pytest>=8.0.0")
  if [ ${#need[@]} -gt 0 ]; then
    if ls wheels/*.whl >/dev/null 2>&1; then
      # offline, from the carried wheels only: pip installs what is missing and keeps what the image has
      "$PY" -m pip install --no-index --find-links wheels -q "${need[@]}" || echo "could not install ${need[*]} from wheels/"
    else
      echo "missing ${need[*]} and no wheels/ folder (bash benchmarks/gpu_wheels.sh makes it): checks that need them fail"
    fi
  fi
  "$PY" -m pip install --no-deps --no-build-isolation -q -e . || echo "editable install failed; using PYTHONPATH"
  "$PY" - <<'EOF'
import importlib
for m in ("torch", "torchvision", "transformers", "accelerate", "timm", "datasets", "pyarrow", "dill", "multiprocess",
          "xxhash", "fsspec", "huggingface_hub", "safetensors", "sklearn", "pytest"):
    try:
        print(f"{m:16s} {getattr(importlib.import_module(m), '__version__', '?')}")
    except Exception as e:
        print(f"{m:16s} MISSING: {e}")
import torch
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF
} 2>&1 | tee "$OUT/install.log"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
# the whole check stops after GPU_CHECK_TIMEOUT s (450: the GPU budget; a CPU dry run on a busy machine needs more)
timeout "${GPU_CHECK_TIMEOUT:-450}" "$PY" benchmarks/gpu_check.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
