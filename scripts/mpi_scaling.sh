#!/usr/bin/env bash
# Training throughput of `geonetc run` for ranks × threads ∈ {1×1, 1×2, 2×1, 4×1}, as a
# markdown table (README, "On a cluster"). Run it on a quiet machine: other work on the cores
# is measured too.
#
# usage: scripts/mpi_scaling.sh [GEONETC [PROGRAM [REPEATS]]]
#   GEONETC   a geonetc built with `--features mpi` (default target/release/geonetc)
#   PROGRAM   the .geonet file to train (default examples/trace_denoiser.geonet)
#   REPEATS   runs per configuration; the table shows the fastest (default 3)
#
# 4×1 is oversubscribed on a 2-core machine (`--oversubscribe`, waiting ranks yield). As root,
# Open MPI also needs `--allow-run-as-root` (added when running as root).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/geonetc}
program=${2:-examples/trace_denoiser.geonet}
repeats=${3:-3}
[[ -x $bin ]] || { echo "no executable $bin (cargo build --release --features mpi)" >&2; exit 2; }
command -v mpirun >/dev/null || { echo "mpirun not found (apt-get install openmpi-bin libopenmpi-dev)" >&2; exit 2; }
root=()
[[ $(id -u) == 0 ]] && root=(--allow-run-as-root)
export OMPI_MCA_btl_vader_single_copy_mechanism=none
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT


run_once() { # ranks threads -> seconds of the whole run
    local ranks=$1 threads=$2 out="$scratch/out-$1x$2" log="$scratch/log"
    rm -rf "$out"
    local start end
    start=$(date +%s.%N)
    if [[ $ranks == 1 ]]; then
        "$bin" run "$program" --out "$out" --threads "$threads" >"$log" 2>&1
    else
        mpirun -np "$ranks" --oversubscribe --bind-to none --mca mpi_yield_when_idle 1 "${root[@]}" \
            "$bin" run "$program" --out "$out" --threads "$threads" >"$log" 2>&1
    fi
    end=$(date +%s.%N)
    echo "$end - $start" | bc -l
}

epochs=$(grep -oE 'epochs *= *[0-9]+' "$program" | grep -oE '[0-9]+$' | head -1 || true)
declare -A best
for config in 1x1 1x2 2x1 4x1; do
    ranks=${config%x*} threads=${config#*x}
    b=""
    for _ in $(seq "$repeats"); do
        t=$(run_once "$ranks" "$threads")
        if [[ -z $b ]] || (($(echo "$t < $b" | bc -l))); then b=$t; fi
    done
    best[$config]=$b
done

# Training samples per epoch: the number `geonetc run` reports ("validation: ..., N train").
samples=$(grep -oE '[0-9]+ train\b' "$scratch/log" | head -1 | grep -oE '^[0-9]+' || true)
echo "$(basename "$program"), $(nproc) cores, fastest of $repeats runs, $(date -u +%Y-%m-%d):"
echo
echo "| ranks × threads | whole run s | samples/s | speed-up vs 1 × 1 |"
echo "|---|---|---|---|"
for config in 1x1 1x2 2x1 4x1; do
    t=${best[$config]}
    rate="—"
    if [[ -n $samples && -n $epochs ]]; then
        rate=$(printf '%.0f' "$(echo "$samples * $epochs / $t" | bc -l)")
    fi
    printf '| %s × %s | %.2f | %s | %.2f |\n' "${config%x*}" "${config#*x}" "$t" "$rate" \
        "$(echo "${best[1x1]} / $t" | bc -l)"
done
