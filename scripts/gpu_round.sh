#!/usr/bin/env bash
# One DiT round on a lent GPU, in one command that fits a short lease (default: done within 525 s).
#
#   scripts/gpu_round.sh OUT_DIR            # writes OUT_DIR/{A,C,D}.tgz (transformer folders) and log.txt
#
# The costly CPU part of the data, the clips' motion labels (~0.2 s of optical flow a clip), comes labelled
# ahead in data/motion/ (see data/README.md); on the GPU machine the captions and latents are encoded
# (MiniLM from the tiny model's shipped copy; latents of the shipped VAE and of data/vae_t2, a VAE compressing time
# 2x instead of 4x, whose latents keep the shapes of moving objects: 89% of them read back, the shipped VAE's 70%),
# then three variants train side by side on the one GPU for what is left of the budget:
#   A  dim 192, 5 layers, 6 heads (3.6M params; fits the 60 MB assets budget in fp16), frame-difference term 1.0
#   C  the shipped transformer grown from 4 to 8 layers, frame-difference term 1.0
#   D  A's transformer on data/vae_t2's latents (twice the latent frames, so twice the tokens a clip)
# A machine without diffusers installs it from wheels in .whl/ (git-ignored), fetched beforehand where pip works:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 -d .whl diffusers==0.42.1 importlib_metadata
# Then, on a CPU: tar xzf OUT_DIR/A.tgz -C W/A; python -m lumina_research.train assemble --vae assets/lumina-video-tiny/vae
# --dit W/A --out PIPE (D: --vae data/vae_t2); evaluate PIPE (README: "Training on a GPU").
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=$(realpath -m "${1:?usage: scripts/gpu_round.sh OUT_DIR}"); mkdir -p "$OUT"
BUDGET=${BUDGET:-525}   # seconds from start until the variants stop training
DEV=${DEV:-cuda}; THREADS=${THREADS:-16}
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PYTHONPATH=$PWD
if ! python3 -c "import diffusers" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PWD:/tmp/site || exit 3
fi
LABELS=$(ls data/motion/motion_0_*.pt | sort -t_ -k3 -n | tail -1)
N=${N:-$(basename "$LABELS" .pt | cut -d_ -f3)}
C=${CACHE:-/tmp/gpu_round_cache}; CT=$C/vae_t2; mkdir -p "$CT"; cp "$LABELS" "$C/"; cp "$LABELS" "$CT/"
VAE=assets/lumina-video-tiny/vae; VAET=data/vae_t2
LOG=$OUT/log.txt; W=${WORK:-/tmp/gpu_round}
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')" | tee -a "$LOG"
dit() { python3 -m lumina_research.train dit --vae "$1" --cache "$2" --device "$DEV" "${@:3}"; }
echo "[$(el)s] smoke: 64 clips, 4 steps" | tee -a "$LOG"
dit "$VAET" "$CT" --out "$W/smoke" --clips 64 --video-clips 64 --steps 4 --batch 8 --dim 192 --layers 5 --heads 6 --kv-heads 2 \
  --frame-diff-weight 1.0 --threads "$THREADS" >> "$LOG" 2>&1 || { tail -40 "$LOG"; exit 4; }
echo "[$(el)s] caches for $N clips" | tee -a "$LOG"
CACHES=(--out "$W/caches" --clips "$N" --video-clips "$N" --steps 0 --dim 96 --layers 1 --heads 3 --kv-heads 1
  --threads "$THREADS")
dit "$VAE" "$C" "${CACHES[@]}" >> "$LOG" 2>&1 || { tail -40 "$LOG"; exit 5; }
cp "$C/meta_$N.pt" "$CT/"   # captions, features and labels do not depend on the VAE
dit "$VAET" "$CT" "${CACHES[@]}" >> "$LOG" 2>&1 || { tail -40 "$LOG"; exit 5; }
MIN=$(python3 -c "print(max(1.0, ($BUDGET - $(el) - 30) / 60))")
echo "[$(el)s] training A, C, D for $MIN min each" | tee -a "$LOG"
COMMON=(--clips "$N" --video-clips "$N" --threads $((THREADS / 3)) --batch 128 --object-weight 1.0 --minutes "$MIN")
WIDE=(--dim 192 --layers 5 --heads 6 --kv-heads 2 --lr 6e-4)
dit "$VAE" "$C" --out "$W/A" "${COMMON[@]}" "${WIDE[@]}" --frame-diff-weight 1.0 > "$W/A.log" 2>&1 &
dit "$VAET" "$CT" --out "$W/D" "${COMMON[@]}" "${WIDE[@]}" --frame-diff-weight 1.0 --batch 64 \
  > "$W/D.log" 2>&1 &   # a clip has twice the latent frames: half the videos keeps the tokens of A's step
dit "$VAE" "$C" --out "$W/C" "${COMMON[@]}" --layers 8 --init assets/lumina-video-tiny/transformer --frame-diff-weight 1.0 \
  --lr 3e-4 > "$W/C.log" 2>&1 &
wait
echo "[$(el)s] trained" | tee -a "$LOG"
for v in A C D; do
  grep -v "dit step" "$W/$v.log" | tail -5 >> "$LOG"; grep "dit step" "$W/$v.log" | awk 'NR % 20 == 0' >> "$LOG"
  (cd "$W/$v" && tar czf "$OUT/$v.tgz" config.json diffusion_pytorch_model.safetensors train_report.json data_info.json \
    train_history.jsonl) || echo "variant $v left no model" | tee -a "$LOG"
done
echo "[$(el)s] end" | tee -a "$LOG"
