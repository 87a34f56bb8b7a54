#!/usr/bin/env bash
# CPU-only array tasks that simulate dialogues against the shared vLLM server (vllm_serve.sh):
# each task takes its slice of the trajectories from SLURM_ARRAY_TASK_ID/COUNT.
#
#   sbatch --array=0-31 examples/slurm/simulate_via_server.sh out/trajectories.parquet out/
#
#SBATCH --job-name=irtk-simulate
#SBATCH --cpus-per-task=4
#SBATCH --mem=16G
#SBATCH --time=04:00:00
#SBATCH --output=logs/%x-%A_%a.out
set -euo pipefail

trajectories=${1:?usage: simulate_via_server.sh TRAJECTORIES OUTDIR}
out=${2:?usage: simulate_via_server.sh TRAJECTORIES OUTDIR}
model=${IRTK_MODEL:-Qwen/Qwen2.5-7B-Instruct}
task=${SLURM_ARRAY_TASK_ID:?run under sbatch --array}
until [ -s "$out/vllm-server.host" ]; do sleep 10; done  # the server job is still starting
base_url="http://$(cat "$out/vllm-server.host"):${PORT:-8000}/v1"

irtk simulate "$trajectories" --backend openai --base-url "$base_url" --model "$model" \
    --seed 13 --resume -o "$out/dialogs-$task.parquet"
