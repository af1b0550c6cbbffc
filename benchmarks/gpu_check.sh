#!/usr/bin/env bash
# The one device check of lottery_rg on a machine with one H100/H200 (see benchmarks/gpu_check.py).
#
# That machine has Python 3.12 and torch 2.11 (CUDA) with transformers, accelerate, timm, torchvision,
# huggingface_hub, safetensors, scipy, pandas, matplotlib, scikit-learn and tensorboard preinstalled, but
# not `datasets`, and no network. `datasets` 5.2 needs, beyond those: dill, multiprocess, xxhash, pyarrow
# (>= 24) — and fsspec, filelock, pyyaml, tqdm, packaging, which huggingface_hub/transformers/torch
# normally bring along (this script checks; carry an fsspec wheel as well to be safe). Make the wheels on
# the development machine, for CPython 3.12 on manylinux x86-64 (57 MB, of which pyarrow 26.0.1 is 55 MB:
# under the 64 MiB a device run can carry). Name manylinux_2_28 too: with manylinux2014 alone pip picks
# pyarrow 20, which datasets 5.2 (pyarrow >= 24) refuses.
#
#   pip download datasets==5.2.0 dill multiprocess xxhash "pyarrow>=24" fsspec --no-deps -d wheels/ \
#       --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
#       --platform manylinux2014_x86_64 --only-binary=:all:
#
# and carry `wheels/` (ignored by git) with the working tree. Then, on the GPU machine:
#
#   bash benchmarks/gpu_check.sh              # report in $OUT (gpu_check.json + gpu_check.md)
#   bash benchmarks/gpu_check.sh --only step_ratio global_prune    # any gpu_check.py flags pass through
#
# Budget: under 8 minutes in all (install ~30 s, checks ~5-6 min on an H100).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
{
  echo "== install $(date -u +%FT%TZ)"
  if ! "$PY" -c "import datasets" 2>/dev/null; then
    if ls wheels/*.whl >/dev/null 2>&1; then
      # only wheels whose package is missing (never replace a preinstalled fsspec, say)
      for w in wheels/*.whl; do
        pkg=$(basename "$w" | cut -d- -f1 | tr '_' '-')
        "$PY" -m pip show "$pkg" >/dev/null 2>&1 || "$PY" -m pip install --no-index --no-deps -q "$w"
      done
    else
      echo "no wheels/ folder and no datasets: the checks that build data will fail"
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
timeout 450 "$PY" benchmarks/gpu_check.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
