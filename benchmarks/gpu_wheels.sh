#!/usr/bin/env bash
# The wheels benchmarks/gpu_check.sh carries to the GPU image: what that image lacks, for CPython 3.12 on
# manylinux x86-64. The image has Python 3.12, torch 2.11, torchvision, transformers 5.17, accelerate 1.15, timm,
# huggingface_hub, safetensors, scipy, pandas, matplotlib, scikit-learn and tensorboard, but not `datasets`
# (nor, perhaps, pytest) and no network. The versions are the floors that `make test-floor` tests (datasets
# 4.0.0 accepts the huggingface_hub < 2 that transformers 5.17 needs; datasets >= 5 needs huggingface_hub >= 1.31)
# and their dependencies; gpu_check.sh installs from here only what the image is missing (pip, offline).
#
#   bash benchmarks/gpu_wheels.sh          # on the development machine: writes wheels/ (about 60 MB, ignored by git)
#   then carry `wheels` with the working tree and run `bash benchmarks/gpu_check.sh` on the GPU machine
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
rm -rf wheels
mkdir wheels
"$PY" -m pip download --quiet --no-deps -d wheels --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    datasets==4.0.0 dill==0.3.8 multiprocess==0.70.16 fsspec==2025.3.0 xxhash pyarrow==26.0.1 \
    aiohttp aiosignal aiohappyeyeballs attrs frozenlist multidict propcache yarl \
    requests certifi charset-normalizer idna urllib3 \
    pytest==8.0.0 iniconfig pluggy
ls wheels
du -sh wheels
