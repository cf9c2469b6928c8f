#!/usr/bin/env bash
# Build llama.cpp's llama-bench from the same patched tree as mtpchat's wheel, to compare plain
# decoding with llama.cpp's own tool on the same file and thread count. Needs the sdist that
# native/build.py caches (run ./setup.sh first). Usage: native/llama_bench.sh [extra cmake args]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${MTPCHAT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mtpchat}"
sdist="$(ls "$cache"/sdist/llama_cpp_python-*.tar.gz 2>/dev/null | head -1 || true)"
[ -n "$sdist" ] || { echo "llama_bench.sh: no cached sdist in $cache/sdist: run ./setup.sh first" >&2; exit 1; }
out="$cache/llama-bench"
src="$out/src"
rm -rf "$src" && mkdir -p "$src"
tar -xzf "$sdist" -C "$src" --strip-components=1
for p in "$here"/patches/*.patch; do patch -d "$src/vendor/llama.cpp" -p1 --batch --forward --quiet -i "$p"; done
cmake -S "$src/vendor/llama.cpp" -B "$out/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=OFF \
  -DLLAMA_CURL=OFF "$@" >/dev/null
cmake --build "$out/build" -j "$(nproc 2>/dev/null || echo 2)" --target llama-bench
mkdir -p "$out/bin" && cp "$out/build/bin/llama-bench" "$out/bin/"
echo "$out/bin/llama-bench"
