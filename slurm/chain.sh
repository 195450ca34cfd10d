#!/bin/bash
# chain.sh - submit job scripts so that each starts only after the previous one succeeded
#
#   slurm/chain.sh slurm/preemptible.sbatch slurm/evaluate.sbatch [more.sbatch ...]
#
# Prints the job ids, one per line, in order. Every job gets --dependency=afterok:<previous>;
# give each later script --kill-on-invalid-dep=yes (evaluate.sbatch has it) so that a
# failed link cancels the rest instead of leaving them pending forever.
# Options for every sbatch call can go in SBATCH_ARGS, e.g. SBATCH_ARGS="--account=abc".
# With the two templates named above, evaluation finds training's checkpoints by itself.
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,9p' "$0" >&2; exit 2; }
read -r -a common <<<"${SBATCH_ARGS:-}"
previous=
for script in "$@"; do
  dependency=()
  [ -n "$previous" ] && dependency=(--dependency="afterok:$previous")
  previous=$(sbatch --parsable "${common[@]}" "${dependency[@]}" "$script")
  previous=${previous%%;*}
  echo "$previous"
done
