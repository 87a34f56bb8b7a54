#!/usr/bin/env bash
# The data stages of the study as Slurm jobs: a vLLM server, expand + simulate shards that use it,
# then one merge job once every shard succeeded (afterok), which also stops the server.
#
#   bash examples/slurm/submit_study.sh examples/seeds.jsonl out/ 16
set -euo pipefail

seeds=${1:?usage: submit_study.sh SEEDS OUTDIR [SHARDS]}
out=${2:?usage: submit_study.sh SEEDS OUTDIR [SHARDS]}
shards=${3:-16}
here=$(dirname "$0")
mkdir -p "$out" logs

server=$(sbatch --parsable "$here/vllm_serve.sh" "$out")
# Expanding seeds with their own graphs needs no LLM: one small job, then the sharded simulation.
expand=$(sbatch --parsable --job-name=irtk-expand --cpus-per-task=2 --mem=8G --output=logs/%x-%j.out \
    --wrap "irtk expand $seeds --no-build -o $out/trajectories.parquet --report $out/expand-stats.json")
array=$(sbatch --parsable --dependency="afterok:$expand" --array="0-$((shards - 1))" \
    "$here/simulate_via_server.sh" "$out/trajectories.parquet" "$out")
sbatch --dependency="afterok:$array" --job-name=irtk-merge --cpus-per-task=2 --mem=16G \
    --output=logs/%x-%j.out \
    --wrap "irtk show $out/dialogs-*.parquet -o $out/dialogs.parquet && scancel $server"
echo "submitted: server $server, expand $expand, simulate array $array (then merge)"
