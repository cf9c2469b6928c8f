#!/usr/bin/env bash
# The GPU check of the native step. The device machine has no network and takes at most 64 MiB
# per call, working tree included, so the compressed model (~112 MB) travels in parts over
# several calls, fired one right after the other so that the machine (and what it built) stays
# warm:
#   native/device_check.sh prepare   here: .dev/c1 (patched llama.cpp tree without the other
#                                    backends, slim wheels, prompt sets, model part 1), .dev/c2 ...
#                                    (the other parts), sized to what travels beside them
#   native/device_check.sh build     on the GPU machine, carrying .dev/c1: one CUDA build for one
#                                    architecture (CUDA_ARCH, default 90; CUDA=0 builds for the CPU,
#                                    to try the script here): llama-bench against libraries that
#                                    export everything, then the same libraries relinked with
#                                    native/exports.map for mtpchat, as setup.sh links them
#   native/device_check.sh stash     carrying a middle part: keeps it for the run
#   native/device_check.sh run       carrying the last part: the gating check, the batch-shape
#                                    probe, llama-bench, then bench on every prompt set (auto, then
#                                    quadratic:4, then quadratic:1 and :2 on math, then quadratic:1
#                                    with the step's work on the host) while time is left
#                                    (RUN_BUDGET_S, default 420). $OUT gets summary.json, log.txt
#                                    and results.tgz (every raw output, repacked after each step:
#                                    a call returns at most 8 files)
#   native/device_check.sh diagnose  instead of run: pass costs by size and shape, with and without
#                                    CUDA graphs; batch-shape probes by setting; native step by threads
#   native/device_check.sh experiment  instead of run: a patch of native/experiments (EXPERIMENT,
#                                    default merged-lora-groups.patch) against this build: gating,
#                                    pass costs and auto on math before and after it; $OUT/experiment.json.
#                                    It rebuilds libllama twice (apply, revert)
#   native/device_check.sh light     here, before prepare and the calls: the checkpoint and targets
#                                    stop travelling (two calls instead of four); unlight after
# mtpchat itself runs from the carried working tree (PYTHONPATH), not from a wheel.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"; root="$(dirname "$here")"
stage="${STAGE:-/tmp/mtpchat-device}"; work="$stage/w"; res="$stage/res"; out="${OUT:-$stage/out}"
mkdir -p "$stage" "$out" "$res"
log() { echo "[$(date +%T)] $*" | tee -a "$out/log.txt" >&2; }
. "$here/device_parts.sh"

prepare() {
  local cache="${MTPCHAT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mtpchat}" py="${PYTHON:-$root/.venv/bin/python}"
  local c1="$root/.dev/c1" t; t="$(mktemp -d)"
  rm -rf "$root"/.dev/c* && mkdir -p "$c1/whl" "$c1/prompts"
  local tree; tree="$("$py" "$here/build.py" --source "$t/src")" || exit 1
  # only what a CUDA or CPU build configures: 9.2 MB compressed with everything, 5.7 without
  (cd "$tree" && rm -rf docs models tests benches tools/ui examples/*/assets app conversion gguf-py pocs \
    skills media ci scripts grammars requirements convert_*.py \
    ggml/src/ggml-{sycl,vulkan,opencl,hexagon,metal,et,webgpu,openvino,cann,virtgpu,zdnn,zendnn,rpc,blas,kompute,musa})
  tar -czf "$c1/llama.cpp.tgz" -C "$(dirname "$tree")" llama.cpp
  cp "$here/exports.map" "$c1/"
  # llama-cpp-python's Python code only, from the cached patched wheel: the CUDA libraries come
  # from the build there, and a pure-Python tag installs on its Python 3.12
  "$py" - "$(ls -t "$cache"/wheels/*/llama_cpp_python-*.whl | head -1)" "$c1/whl" <<'PY' || exit 1
import sys, zipfile
from pathlib import Path
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
name = "-".join(src.name.split("-")[:2]) + "-py3-none-any.whl"
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst / name, "w", zipfile.ZIP_DEFLATED) as zout:
    for item in zin.infolist():
        if item.filename.split("/")[0] in ("lib", "include", "bin") or "/lib/" in item.filename:
            continue
        data = zin.read(item)
        if item.filename.endswith(".dist-info/WHEEL"):
            data = b"".join(l if not l.startswith(b"Tag:") else b"Tag: py3-none-any\n" for l in data.splitlines(True))
        zout.writestr(item, data)
PY
  # what the GPU machine's Python lacks (llama_cpp's package __init__ imports diskcache)
  "$py" -m pip download -q --no-deps --only-binary :all: --python-version 3.12 --platform manylinux2014_x86_64 \
    -d "$c1/whl" gguf prompt_toolkit wcwidth diskcache || exit 1
  cp "$root"/../shared/prompts/*.jsonl "$c1/prompts/" 2>/dev/null || cp "${PROMPTS:?set PROMPTS to the prompt sets}"/*.jsonl "$c1/prompts/"
  local model; model="$("$py" -m mtpchat.models)" || exit 1
  rm -rf "$t"
  spread "$model" model "$root/.dev/c" || exit 1
  echo "calls: build carrying .dev/c1, stash carrying each middle one, run (or diagnose) carrying the last"
}

stash() {
  stash_parts "$root/.dev/c" "$stage"
}

build() {
  # a machine still warm from an earlier check keeps its stage: nothing of that one may mix in
  # (two llama-cpp-python wheels stop pip, an old model part corrupts the join)
  rm -rf "$stage"/whl "$stage"/prompts "$stage"/model.* "$stage"/site "$res"
  mkdir -p "$res"
  stash
  [ -d /usr/local/cuda/bin ] && export PATH=/usr/local/cuda/bin:$PATH
  rm -rf "$work" && mkdir -p "$work" && tar -xzf "$stage/llama.cpp.tgz" -C "$work"
  local b="$work/build" gpu=(-DGGML_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCH:-90}" -DGGML_CUDA_FA=OFF -DGGML_CUDA_NCCL=OFF)
  [ "${CUDA:-1}" = 0 ] && gpu=()
  local common=(-S "$work/llama.cpp" -B "$b" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON "${gpu[@]}"
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF
    -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=OFF)
  # one compilation serves both: llama-bench needs the libraries' C++ exports, mtpchat must not
  # have them (the libstdc++ clash), and the version script only changes the link
  log "configure"
  cmake "${common[@]}" > "$out/build.txt" 2>&1 || { log "cmake failed"; tail -30 "$out/build.txt"; exit 1; }
  log "build"
  cmake --build "$b" -j "$(nproc)" --target llama llama-bench >> "$out/build.txt" 2>&1 \
    || { log "build failed"; grep -m5 -B2 -A12 -i "error" "$out/build.txt"; exit 1; }
  rm -rf "$work/bench-bin" && cp -r "$b/bin" "$work/bench-bin"
  log "relink with the exports map"
  cmake "${common[@]}" "-DCMAKE_SHARED_LINKER_FLAGS=-Wl,--version-script=$stage/exports.map" >> "$out/build.txt" 2>&1 \
    && cmake --build "$b" -j "$(nproc)" --target llama >> "$out/build.txt" 2>&1 \
    || { log "relink failed"; tail -30 "$out/build.txt"; exit 1; }
  grep -c "Building CUDA object\|Building CXX object\|Building C object" "$out/build.txt" | sed 's/^/objects compiled (both passes): /' | tee -a "$out/log.txt"
  log "built: $(ls "$b/bin" | tr '\n' ' ')"
}

# The checkpoint and the training targets (27 MB) need not travel to the GPU machine; untracked
# and excluded in this checkout (the files stay on disk) they leave room for the model in two
# calls. `unlight` tracks them again; nothing is committed either way.
heavy=(train/checkpoints/smollm2-135m-k4/adapter_model.safetensors train/checkpoints/smollm2-135m-k4/sampler.safetensors
       train/targets/smollm2-135m-instruct-q4_1.n256.jsonl)
light() {
  local ex; ex="$(git -C "$root" rev-parse --git-path info/exclude)"; mkdir -p "$(dirname "$root/$ex")"
  for f in "${heavy[@]}"; do grep -qxF "/$f" "$root/$ex" 2>/dev/null || echo "/$f" >> "$root/$ex"; done
  git -C "$root" rm -q --cached -- "${heavy[@]}" && git -C "$root" status --short
}
unlight() {
  local ex; ex="$(git -C "$root" rev-parse --git-path info/exclude)"
  git -C "$root" reset -q -- "${heavy[@]}"
  if [ -f "$root/$ex" ]; then
    grep -vxF "${heavy[@]/#/-e/}" "$root/$ex" > "$root/$ex.tmp"; mv "$root/$ex.tmp" "$root/$ex"
  fi
  git -C "$root" status --short
}

pack() {  # every raw output so far, in one file (a call returns at most 8)
  tar -czf "$out/results.tgz.part" -C "$res" . && mv "$out/results.tgz.part" "$out/results.tgz"
}

env_up() {  # the model joined and checked, the wheels installed, the environment set
  stash
  [ -s "$stage/model.gguf" ] || join_parts "$stage" model "$stage/model.gguf" 2>&1 | tee -a "$out/log.txt" >&2
  [ -s "$stage/model.gguf" ] || exit 1
  python3 -m pip install -q --no-index --no-deps --upgrade --target "$stage/site" "$stage"/whl/*.whl >> "$out/log.txt" 2>&1 || { log "pip failed"; exit 1; }
  b="$work/build/bin"; m="$stage/model.gguf"; ngl="${NGL:--1}"
  export LLAMA_CPP_LIB_PATH="$b" LD_LIBRARY_PATH="$b" MTPCHAT_CACHE="$stage/cache" PYTHONUNBUFFERED=1 \
    PYTHONPATH="$root:$stage/site${PYTHONPATH:+:$PYTHONPATH}"
}

gate() {  # ordinary rows with and without the adapter, the same batch (mask tokens in both)
  timeout 120 python3 - "$m" "$ngl" > "$res/gate.json" 2>> "$out/log.txt" <<'PY'
import json, sys
import numpy as np
from mtpchat import binding as B, format as F
path, ngl = sys.argv[1], int(sys.argv[2])
info = F.read_mtp_info(F.open_gguf(path))
model = B.Model(path, n_gpu_layers=ngl)
ids = model.tokenize("The quick brown fox jumps over the lazy dog because it wants to.")
toks = ids + info.mask_ids
res = {}
for adapter in (None, B.Adapter(model)):
    ctx = B.Context(model, n_ctx=512, n_seq_max=2)
    ctx.set_adapter(adapter)
    n = ctx.decode(toks, list(range(len(toks))), outputs=[1] * len(toks))
    res[adapter is not None] = np.array(ctx.logits(n))
    ctx.close()
k = len(ids)
print(json.dumps({"max_abs_diff_ordinary_rows": float(np.abs(res[True][:k] - res[False][:k]).max()),
                  "max_abs_diff_mask_rows": float(np.abs(res[True][k:] - res[False][k:]).max())}))
PY
}

run() {
  local t0=$SECONDS budget="${RUN_BUDGET_S:-420}" b m ngl
  env_up
  # symbols of the C++ standard library itself (functions taking std:: arguments are llama's own)
  nm -D --defined-only -C "$b"/lib{llama,ggml,ggml-base,ggml-cpu,ggml-cuda}.so 2>/dev/null \
    | grep -cE '^[0-9a-f]+ [A-Za-z] (std::|__gnu_cxx::)|for (std::|__gnu_cxx::)' > "$res/std_exports.txt"
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv > "$res/gpu.txt" 2>&1
  log "gating"
  gate
  log "batch-shape probe"
  timeout 90 python3 "$here/batch_shape_probe.py" "$m" --ngl "$ngl" > "$res/batch_shape.json" 2>> "$out/log.txt"
  pack
  log "llama-bench"
  LD_LIBRARY_PATH="$work/bench-bin" timeout 120 "$work/bench-bin/llama-bench" -m "$m" -ngl 99 -p 1,2,4,8,16,32 -n 128 -r 5 -o jsonl \
    > "$res/llama-bench.jsonl" 2>> "$out/log.txt"
  pack
  local sets=("$stage"/prompts/*.jsonl) jobs=() set tree
  for set in "${sets[@]}"; do jobs+=("$set auto"); done
  for set in "${sets[@]}"; do jobs+=("$set quadratic:4"); done
  # the last job: quadratic:1 with verification and the head on the host (patch 0004's step), to
  # set beside the same tree in the graph (patch 0007)
  for set in "${sets[@]}"; do [[ $set == *math* ]] && jobs+=("$set quadratic:1" "$set quadratic:2" "$set quadratic:1 host"); done
  local step name
  for job in "${jobs[@]}"; do
    read -r set tree step <<< "$job"; step="${step:-native}"
    name="bench-$(basename "$set" .jsonl)-${tree/:/}$([ "$step" = native ] || echo "-$step")"
    local left=$(( budget - (SECONDS - t0) ))
    if [ "$left" -lt 30 ]; then log "skipped $name: run budget spent"; continue; fi
    log "$name (${left} s left)"
    timeout "$(( left < 150 ? left : 150 ))" python3 -m mtpchat bench "$m" --prompts "$set" -ngl "$ngl" --tree "$tree" \
      --step "$step" -n "${BENCH_TOKENS:-128}" --repeats 2 --json > "$res/$name.json" 2>> "$out/log.txt" \
      || log "$name: exit $?"
    pack
  done
  python3 - "$res" > "$out/summary.json" <<'PY'
import json, pathlib, sys
o = pathlib.Path(sys.argv[1])
def read(name, parse):
    try: return parse((o / name).read_text())
    except Exception as e: return repr(e)
s = {"gpu": read("gpu.txt", str.strip), "std_exports": read("std_exports.txt", str.split),
     "gate": read("gate.json", json.loads), "batch_shape": read("batch_shape.json", json.loads),
     "llama_bench": read("llama-bench.jsonl", lambda t: [
         {k: d.get(k) for k in ("n_prompt", "n_gen", "avg_ts", "avg_ns")} for d in map(json.loads, t.splitlines()) if d])}
for f in sorted(o.glob("bench-*.json")):
    def keep(t):
        d = json.loads(t)
        return {"aggregate": d["aggregate"], "step": d["step"], "calibration": d["calibration"],
                "measured_tok_s": d["measured_tok_s"],
                "divergences": [(p["id"], p.get("first_divergence"), p.get("top2_gap")) for p in d["prompts"] if not p["identical"]]}
    s[f.stem] = read(f.name, keep)
print(json.dumps(s, indent=1))
PY
  pack
  log "done in $(( SECONDS - t0 )) s"
}

diagnose() {  # where the time of a pass goes, and which setting moves the logits by batch shape
  local t0=$SECONDS b m ngl
  env_up
  log "gating"; gate
  log "pass profile"
  timeout 90 python3 "$here/pass_profile.py" "$m" --ngl "$ngl" > "$res/pass_profile.json" 2>> "$out/log.txt"
  GGML_CUDA_DISABLE_GRAPHS=1 timeout 90 python3 "$here/pass_profile.py" "$m" --ngl "$ngl" > "$res/pass_profile_nographs.json" 2>> "$out/log.txt"
  pack
  log "batch-shape probes"
  for v in GGML_CUDA_DISABLE_GRAPHS GGML_CUDA_DISABLE_FUSION; do
    env "$v=1" timeout 60 python3 "$here/batch_shape_probe.py" "$m" --ngl "$ngl" > "$res/batch_shape_$v.json" 2>> "$out/log.txt"
  done
  timeout 60 python3 "$here/batch_shape_probe.py" "$m" --ngl 0 > "$res/batch_shape_cpu.json" 2>> "$out/log.txt"
  pack
  local set; set="$(ls "$stage"/prompts/*math*.jsonl | head -1)"
  for job in "quadratic:1 1" "quadratic:1 16" "quadratic:4 1" "quadratic:4 16"; do
    local tree="${job% *}" t="${job##* }"
    [ $(( SECONDS - t0 )) -lt "${RUN_BUDGET_S:-240}" ] || { log "skipped $job: budget spent"; continue; }
    log "bench math $tree -t $t"
    timeout 60 python3 -m mtpchat bench "$m" --prompts "$set" -ngl "$ngl" --tree "$tree" --threads "$t" -n 64 --repeats 1 --json \
      > "$res/bench-math-${tree/:/}-t$t.json" 2>> "$out/log.txt" || log "bench $job: exit $?"
    pack
  done
  log "done in $(( SECONDS - t0 )) s"
}

experiment() {  # a patch of native/experiments against this build: gating, pass costs and auto on math, before and after
  local t0=$SECONDS b m ngl p="${EXPERIMENT:-$here/experiments/merged-lora-groups.patch}" set side
  env_up
  set="$(ls "$stage"/prompts/*math*.jsonl | head -1)"
  for side in before after; do
    if [ "$side" = after ]; then
      log "apply $(basename "$p") and rebuild libllama"
      (cd "$work/llama.cpp" && patch -p1 --forward --batch < "$p") >> "$out/log.txt" 2>&1 || { log "patch failed"; exit 1; }
      cmake --build "$work/build" -j "$(nproc)" --target llama >> "$out/build.txt" 2>&1 \
        || { log "rebuild failed"; grep -m5 -B2 -A12 -i "error" "$out/build.txt"; exit 1; }
    fi
    log "$side: gating, pass profile, bench math auto"
    gate && mv "$res/gate.json" "$res/exp-gate-$side.json"
    timeout 90 python3 "$here/pass_profile.py" "$m" --ngl "$ngl" > "$res/exp-pass-$side.json" 2>> "$out/log.txt"
    timeout 150 python3 -m mtpchat bench "$m" --prompts "$set" -ngl "$ngl" --tree auto -n "${BENCH_TOKENS:-128}" \
      --repeats 2 --json > "$res/exp-bench-$side.json" 2>> "$out/log.txt" || log "bench $side: exit $?"
    pack
  done
  # a later `run` on this warm machine must measure the tree as committed
  log "revert and rebuild"
  (cd "$work/llama.cpp" && patch -p1 -R --batch < "$p") >> "$out/log.txt" 2>&1 \
    && cmake --build "$work/build" -j "$(nproc)" --target llama >> "$out/build.txt" 2>&1 || log "revert failed"
  python3 - "$res" "$(basename "$p")" > "$out/experiment.json" <<'PY'
import json, pathlib, sys
o, name = pathlib.Path(sys.argv[1]), sys.argv[2]
def read(f, parse):
    try: return parse((o / f).read_text())
    except Exception as e: return repr(e)
def costs(d):
    return {"plain_ms": {n: r["wall_ms"] for n, r in d["plain"].items()},
            "mtp_ms": {n: r["wall_ms"] for n, r in d["mtp"].items()}, "mtp_parts_4": d.get("mtp_parts_4")}
s = {"patch": name}
for side in ("before", "after"):
    s[side] = {"gate": read(f"exp-gate-{side}.json", json.loads),
               "pass": read(f"exp-pass-{side}.json", lambda t: costs(json.loads(t))),
               "bench_math_auto": read(f"exp-bench-{side}.json", lambda t: json.loads(t)["aggregate"])}
print(json.dumps(s, indent=1))
PY
  pack
  log "experiment done in $(( SECONDS - t0 )) s"
}

case "${1:-}" in
  prepare) prepare ;;
  build) build ;;
  stash) stash ;;
  run) run ;;
  diagnose) diagnose ;;
  experiment) experiment ;;
  light) light ;;
  unlight) unlight ;;
  *) echo "usage: native/device_check.sh prepare|build|stash|run|diagnose|experiment|light|unlight" >&2; exit 2 ;;
esac
