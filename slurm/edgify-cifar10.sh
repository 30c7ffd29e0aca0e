#!/usr/bin/env bash
# The Edgify experiment (Benditkis et al., SEC 2019) on a Slurm cluster, as three jobs that each
# ask for the CPUs they use. Run it on the login node, from the repository root:
#
#   slurm/edgify-cifar10.sh [--ranks R] [--cpus C] [--max-running N] [--target ACC] [--out DIR]
#                           [--set KEY=VALUE ...]
#
#   1. edgify-central: the centralized reference, one process with C CPUs (default 8) as its
#      torch threads (benchmarks/sweeps/edgify-cifar10-centralized.yaml);
#   2. edgify-devices: Large Batch, FedAvg, dynamic averaging and FDA on 96 devices, an array of
#      4 tasks of R ranks with one CPU each (benchmarks/sweeps/edgify-cifar10.yaml). R is 96 by
#      default; a smaller R that divides 96 runs the 96 devices as 96/R virtual devices per rank
#      (parallel.devices_per_rank), with the same results; at most N tasks at once (%N);
#   3. edgify-report, once both have ended: DIR/edgify-cifar10/report.md (costs to ACC, default
#      0.8 as in the paper; bytes against Large Batch) and the figures accuracy-by-epoch.png,
#      accuracy-by-round.png and accuracy-by-bytes.png.
#
# Both arrays go through slurm/sweep.sbatch: each task's log is in DIR/edgify-cifar10/logs/,
# Slurm's own files in results/logs/, and a task stopped at its time limit checkpoints, is
# requeued and resumes (see that file). --set KEY=VALUE fixes a config key in both sweeps
# (and so in every point's id), e.g. for a smoke test. What each setting is and where it comes
# from: benchmarks/configs/edgify-cifar10.yaml. Prints the three job ids.
#
# Environment: EDGEMPI (the command that runs edgempi, default "edgempi"), EDGEMPI_LAUNCHER
# (srun or mpiexec, see slurm/sweep.sbatch), EDGIFY_TIME_CENTRAL / EDGIFY_TIME_DEVICES (time
# limits, default 12:00:00 and 04:00:00; a task that reaches its limit continues after a requeue).
set -euo pipefail

ranks=96 cpus=8 max_running="" target=0.8 out=results
sets=()
while (($#)); do
    case $1 in
        --ranks) ranks=$2; shift 2 ;;
        --cpus) cpus=$2; shift 2 ;;
        --max-running) max_running=%$2; shift 2 ;;
        --target) target=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --set) sets+=(--set "$2"); shift 2 ;;
        *) echo "usage: $0 [--ranks R] [--cpus C] [--max-running N] [--target ACC] [--out DIR] [--set K=V ...]" >&2
           exit 2 ;;
    esac
done
if ! [[ $ranks =~ ^[0-9]+$ ]] || ((ranks < 1 || 96 % ranks)); then
    echo "edgify-cifar10: --ranks must divide the 96 devices, not '$ranks'" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")/.." && pwd)
central=$here/benchmarks/sweeps/edgify-cifar10-centralized.yaml
devices=$here/benchmarks/sweeps/edgify-cifar10.yaml
read -r -a edgempi <<<"${EDGEMPI:-edgempi}"
# The 96 devices on R ranks: R is the world size of every point, 96/R devices per rank.
per_rank=()
if ((ranks != 96)); then per_rank=(--set "ranks=$ranks" --set "parallel.devices_per_rank=$((96 / ranks))"); fi
count=$("${edgempi[@]}" sweep "$devices" --count "${sets[@]}" "${per_rank[@]}")
dir=$("${edgempi[@]}" sweep "$devices" --results-dir --out "$out")
mkdir -p results/logs

jid_central=$(sbatch --parsable --job-name=edgify-central --array=0 --ntasks=1 --cpus-per-task="$cpus" \
    --time="${EDGIFY_TIME_CENTRAL:-12:00:00}" "$here/slurm/sweep.sbatch" "$central" --out "$out" "${sets[@]}")
jid_devices=$(sbatch --parsable --job-name=edgify-devices --array="0-$((count - 1))$max_running" \
    --ntasks="$ranks" --cpus-per-task=1 --time="${EDGIFY_TIME_DEVICES:-04:00:00}" \
    "$here/slurm/sweep.sbatch" "$devices" --out "$out" "${sets[@]}" "${per_rank[@]}")
q() { printf '%q ' "$@"; }
report="$(q "${edgempi[@]}") report $(q "$dir") --target-acc $(q "$target") --baseline algorithm.name=large_batch \
-o $(q "$dir/report.md")"
plot() {
    echo "$(q "${edgempi[@]}") plot $(q "$dir") --x $1 --y test_acc --title $(q "Edgify experiment, 96 devices") \
-o $(q "$dir/accuracy-by-$1.png")"
}
jid_report=$(sbatch --parsable --job-name=edgify-report --dependency="afterany:$jid_central:$jid_devices" \
    --ntasks=1 --cpus-per-task=1 --time=00:30:00 --output="results/logs/%x-%j.out" \
    --wrap "set -e; $report; $(plot epoch); $(plot round); $(plot bytes)")
echo "$jid_central $jid_devices $jid_report"
