#!/usr/bin/env bash
# One Slurm array task per shard: expand a slice of the seeds, then simulate its dialogues on a
# GPU with vLLM. irtk picks its slice from SLURM_ARRAY_TASK_ID/COUNT, so no --shard is needed.
#
#   sbatch --array=0-15 examples/slurm/expand_simulate_array.sh seeds.jsonl out/
#   # when all tasks are done, concatenate the shards:
#   irtk show out/dialogs-*.parquet -o out/dialogs.parquet
#
#SBATCH --job-name=irtk-expand-simulate
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=64G
#SBATCH --time=04:00:00
#SBATCH --output=logs/%x-%A_%a.out
set -euo pipefail

seeds=${1:?usage: expand_simulate_array.sh SEEDS OUTDIR}
out=${2:?usage: expand_simulate_array.sh SEEDS OUTDIR}
model=${IRTK_MODEL:-Qwen/Qwen2.5-7B-Instruct}
task=${SLURM_ARRAY_TASK_ID:?run under sbatch --array}
mkdir -p "$out"

# Trajectories stay on the node's disk; only the dialogues go to shared storage.
irtk expand "$seeds" --backend vllm --model "$model" --seed 13 \
    -o "${TMPDIR:-/tmp}/trajectories-$task.parquet"
# This task's trajectories are already its slice: --shard 0/1 keeps them all.
irtk simulate "${TMPDIR:-/tmp}/trajectories-$task.parquet" --shard 0/1 --backend vllm \
    --model "$model" --seed 13 -o "$out/dialogs-$task.parquet"
