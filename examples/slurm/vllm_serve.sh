#!/usr/bin/env bash
# A vLLM OpenAI-compatible server on one GPU node; other jobs reach it with
#   --backend openai --base-url http://$(cat out/vllm-server.host):8000/v1
# It writes its host name to OUTDIR/vllm-server.host once it answers, and serves until the job ends.
#
#   sbatch examples/slurm/vllm_serve.sh out/
#
#SBATCH --job-name=irtk-vllm-serve
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=16
#SBATCH --mem=128G
#SBATCH --time=12:00:00
#SBATCH --output=logs/%x-%j.out
set -euo pipefail

out=${1:?usage: vllm_serve.sh OUTDIR}
model=${IRTK_MODEL:-Qwen/Qwen2.5-7B-Instruct}
port=${PORT:-8000}
mkdir -p "$out"
rm -f "$out/vllm-server.host"

# --enable-prefix-caching: every dialogue turn re-sends the dialogue so far; the server keeps its
# key/value cache, so only the new turn is pre-filled.
vllm serve "$model" --host 0.0.0.0 --port "$port" --enable-prefix-caching \
    --tensor-parallel-size "${SLURM_GPUS_ON_NODE:-1}" &
server=$!
until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do
  kill -0 "$server" 2>/dev/null || { echo "vllm serve exited before answering" >&2; exit 1; }
  sleep 5
done
hostname > "$out/vllm-server.host"
wait "$server"
