#!/usr/bin/env bash
# Every row of the paper's Table 2 or Table 3 as one Slurm job array: one job (slurm/exp.sbatch) per preset and seed.
#
#   slurm/table.sh table2|table3 [--seeds N ...] [--at-once K] [SBATCH_OPTION ...] [-- --set KEY=VALUE ...]
#
# The rows are the presets named table2-* / table3-* in configs/experiments.yaml. Without --seeds each row runs once
# with the params' base.seed, as experiment PRESET; with --seeds 0 1 2 each row runs once per seed, as experiments
# PRESET-seed0, PRESET-seed1, ... (dgspnet_exp --table gives the mean over a row's seeds and names them).
# --at-once K: at most K of the array's jobs run at the same time. SBATCH_OPTIONs (--time, --gres=gpu:1, --partition,
# --nodes, ...) go to sbatch; the words after `--` to every job (Table 2 on NUDT-SIRST:
# `-- --set data.source=data/NUDT-SIRST`).
# Prints the array's job id. When the jobs have finished: `dvc exp show`, `dgspnet_exp --table`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
table=${1:-}
case $table in
  table2|table3) shift ;;
  *) echo "usage: slurm/table.sh table2|table3 [--seeds N ...] [--at-once K] [SBATCH_OPTION ...]" \
          "[-- --set KEY=VALUE ...]" >&2
     exit 2 ;;
esac
seeds=() sbatch_opts=() job_args=() at_once=
while [ $# -gt 0 ]; do
  case $1 in
    --seeds) shift; while [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; do seeds+=("$1"); shift; done
             [ ${#seeds[@]} -gt 0 ] || { echo "table.sh: --seeds needs at least one number" >&2; exit 2; } ;;
    --at-once) at_once=%${2:?--at-once needs a number}; shift 2 ;;
    --) shift; job_args=("$@"); break ;;
    *) sbatch_opts+=("$1"); shift ;;
  esac
done
presets=$(dgspnet_exp --list | awk -v t="$table-" 'index($1, t) == 1 {print $1}')
[ -n "$presets" ] || { echo "table.sh: no $table-* preset in configs/experiments.yaml" >&2; exit 2; }
rows=()
for p in $presets; do
  if [ ${#seeds[@]} = 0 ]; then rows+=("$p:"); else for s in "${seeds[@]}"; do rows+=("$p:$s"); done; fi
done
for p in $presets; do  # every preset checked (keys, dataset, CLIP weights) before anything is submitted
  dgspnet_exp "$p" "${job_args[@]}" --queue --dry-run > /dev/null
done
export DGSPNET_ARRAY="${rows[*]}"
sbatch --parsable --job-name="dgspnet-$table" --array="0-$(( ${#rows[@]} - 1 ))$at_once" "${sbatch_opts[@]}" \
  "$here/exp.sbatch" "${job_args[@]}"
