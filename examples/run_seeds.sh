#!/usr/bin/env bash
# Run one IMP configuration under N seeds, one after another (resumable: re-running skips
# finished levels, like any run).  All seeds share one data split (--split_seed stays fixed);
# only --seed (initialisation, data order, augmentation) changes.
#
#   examples/run_seeds.sh CONFIG N [NAME] [-- extra run_imp flags]
#   examples/run_seeds.sh examples/configs/resnet20_digits.json 5 resnet20-digits
#   -> runs/resnet20-digits-seed0 … runs/resnet20-digits-seed4
#   lottery-rg flow runs/resnet20-digits-seed{0..4} --granularity block   # pooled flow, null models, verdicts
#
# The seed sets of docs/flow.md (five seeds each):
#   examples/run_seeds.sh examples/configs/resnet20_digits.json 5 resnet20-digits
#   examples/run_seeds.sh examples/configs/bert_pydocs_flow.json 5 bert-pydocs-flow
#   examples/run_seeds.sh examples/configs/resnet14_digits_eq14.json 5 resnet14-digits-eq14
#
# Environment: SEED0 (first seed, default 0), ACCELERATE (launcher, default "accelerate"),
# LAUNCH_FLAGS (default "--num_cpu_threads_per_process 1"), NICE (default 10).
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n 2,18p "$0"; exit 2
fi
config=$1; n=$2; shift 2
name=${1:-$(basename "$config" .json | tr _ -)}
[ $# -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift
seed0=${SEED0:-0}
launcher=${ACCELERATE:-accelerate}
launch_flags=${LAUNCH_FLAGS:---num_cpu_threads_per_process 1}
for ((i = 0; i < n; i++)); do
  s=$((seed0 + i))
  out=runs/${name}-seed${s}
  echo "== seed ${s} -> ${out}"
  # shellcheck disable=SC2086
  nice -n "${NICE:-10}" "$launcher" launch $launch_flags examples/run_imp.py "$config" \
      --seed "$s" --output_dir "$out" "$@"
done
