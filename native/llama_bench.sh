#!/usr/bin/env bash
# Build llama.cpp's llama-bench from the same patched tree as mtpchat's wheel, to compare plain
# decoding with llama.cpp's own tool on the same file and thread count. The patched source comes
# from native/build.py --source (the cached sdist, fetched if missing).
# Usage: native/llama_bench.sh [extra cmake args]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${MTPCHAT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mtpchat}"
out="$cache/llama-bench"
rm -rf "$out/src" "$out/build"   # a fresh tree each time: the old build folder names another source
tree="$(python3 "$here/build.py" --source "$out/src")"
cmake -S "$tree" -B "$out/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=OFF \
  -DLLAMA_CURL=OFF "$@" >/dev/null
cmake --build "$out/build" -j "$(nproc 2>/dev/null || echo 2)" --target llama-bench
mkdir -p "$out/bin" && cp "$out/build/bin/llama-bench" "$out/bin/"
echo "$out/bin/llama-bench"
