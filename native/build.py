#!/usr/bin/env python3
"""Build (or reuse) the patched llama-cpp-python wheel and optionally install it.

The pinned sdist comes from PyPI through pip; native/patches/*.patch are applied to its
vendor/llama.cpp; the wheel is cached under a key made of everything that changes the binary:
version, sdist hash, patches, build flags, platform and CPU features. Standard library only:
it runs before anything else is installed.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _load_pin():
    """mtpchat/native.py (standard library only), by its path: mtpchat is not installed yet."""
    spec = importlib.util.spec_from_file_location("_mtpchat_native_pin", HERE.parent / "mtpchat" / "native.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_pin = _load_pin()
VERSION = _pin.LLAMA_CPP_PYTHON_VERSION
SDIST_SHA256 = _pin.SDIST_SHA256
cache_dir = _pin.cache_dir
sha256 = _pin.sha256
# The Python package needs only libllama and ggml: skip llama.cpp's tools, tests and mtmd.
BASE_CMAKE_ARGS = [
    "-DLLAVA_BUILD=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_TOOLS=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
]
PATCHES = sorted((HERE / "patches").glob("*.patch"))
# every shared library exports its C API only (the reason is in the file); GNU ld and lld on
# Linux. The key hashes the file's contents, not its path, so clones share cached wheels.
EXPORTS = HERE / "exports.map"
EXPORTS_ARG = "-DCMAKE_SHARED_LINKER_FLAGS=-Wl,--version-script="


def platform_cmake_args() -> list[str]:
    return [EXPORTS_ARG + str(EXPORTS)] if sys.platform.startswith("linux") else []


def log(msg: str) -> None:
    print(f"[native] {msg}", file=sys.stderr, flush=True)


def cpu_features() -> str:
    """What -march=native sees, so a wheel is never reused on a different CPU."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return " ".join(sorted(line.split(":", 1)[1].split()))
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"],
                                  capture_output=True, text=True).stdout.strip()
        except OSError:
            pass
    return platform.processor()


def patches_hash() -> str:
    h = hashlib.sha256()
    for p in PATCHES:
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def build_key(cmake_args: list[str]) -> str:
    h = hashlib.sha256()
    args = " ".join(EXPORTS_ARG + sha256(EXPORTS) if a == EXPORTS_ARG + str(EXPORTS) else a for a in cmake_args)
    for part in (VERSION, SDIST_SHA256, patches_hash(), args, sys.platform, platform.machine(), cpu_features()):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16]


def fetch_sdist(cache: Path) -> Path:
    dest = cache / "sdist" / f"llama_cpp_python-{VERSION}.tar.gz"
    if dest.exists() and sha256(dest) == SDIST_SHA256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        req = Path(tmp) / "req.txt"
        req.write_text(f"llama-cpp-python=={VERSION} --hash=sha256:{SDIST_SHA256}\n")
        log(f"downloading llama-cpp-python {VERSION} source from PyPI")
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--no-binary", ":all:", "--require-hashes",
                        "-r", str(req), "-d", tmp], check=True)
        got = next(Path(tmp).glob("*.tar.gz"))
        os.replace(got, dest)
    return dest


def patched_source(sdist: Path, dest: Path) -> Path:
    """The sdist unpacked into `dest` with native/patches applied to its vendor/llama.cpp;
    returns the sdist's root folder (the wheel build, llama_bench.sh and device_check.sh use it)."""
    with tarfile.open(sdist) as tar:
        tar.extractall(dest, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(dest)
    src = Path(dest) / f"llama_cpp_python-{VERSION}"
    for p in PATCHES:
        log(f"applying {p.name}")
        cmd = (["patch", "-p1", "--batch", "--forward", "--quiet", "-i", str(p)] if shutil.which("patch")
               else ["git", "apply", "--unsafe-paths", str(p)])
        subprocess.run(cmd, cwd=src / "vendor" / "llama.cpp", check=True)
    return src


def build_wheel(sdist: Path, cmake_args: list[str], key: str, out: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix="mtpchat-build-") as tmp:
        src = patched_source(sdist, Path(tmp))
        # a local version tag tells a patched build from a stock one at run time
        init = src / "llama_cpp" / "__init__.py"
        init.write_text(init.read_text().replace(
            f'__version__ = "{VERSION}"', f'__version__ = "{VERSION}+mtpchat.{key}"'))
        env = dict(os.environ, CMAKE_ARGS=" ".join(cmake_args),
                   CMAKE_BUILD_PARALLEL_LEVEL=str(os.cpu_count() or 2))
        log(f"building the patched wheel (CMAKE_ARGS={env['CMAKE_ARGS']}); takes minutes the first time")
        t0 = time.time()
        wheel_dir = Path(tmp) / "wheel"
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                        "-w", str(wheel_dir), str(src)], check=True, env=env)
        log(f"built in {time.time() - t0:.0f} s")
        wheel = next(wheel_dir.glob("*.whl"))
        out.mkdir(parents=True, exist_ok=True)
        staged = out / (wheel.name + ".part")
        shutil.copyfile(wheel, staged)
        os.replace(staged, out / wheel.name)
        return out / wheel.name


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--install", action="store_true", help="pip install the wheel into this Python")
    ap.add_argument("--force", action="store_true", help="rebuild even when a cached wheel exists")
    ap.add_argument("--source", metavar="DIR", help="only unpack the patched source into DIR (an empty or new "
                    "folder) and print its vendor/llama.cpp path; nothing is built")
    args = ap.parse_args()
    if args.source:
        dest = Path(args.source)
        dest.mkdir(parents=True, exist_ok=True)
        print(patched_source(fetch_sdist(cache_dir()), dest) / "vendor" / "llama.cpp")
        return 0

    cmake_args = BASE_CMAKE_ARGS + platform_cmake_args() + os.environ.get("CMAKE_ARGS", "").split()
    key = build_key(cmake_args)
    cache = cache_dir()
    wheel_dir = cache / "wheels" / key
    wheels = sorted(wheel_dir.glob("*.whl")) if wheel_dir.exists() else []
    if wheels and not args.force:
        wheel = wheels[0]
        log(f"using cached wheel {wheel}")
    else:
        wheel = build_wheel(fetch_sdist(cache), cmake_args, key, wheel_dir)
    if args.install:
        want = f"{VERSION}+mtpchat.{key}"
        have = subprocess.run([sys.executable, "-c", "import llama_cpp; print(llama_cpp.__version__)"],
                              capture_output=True, text=True).stdout.strip()
        if have != want:
            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                            "--force-reinstall", "--no-deps", str(wheel)], check=True)
            # the wheel's own dependencies, without touching the patched build
            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", str(wheel)], check=True)
        log(f"llama-cpp-python {want} installed")
    print(wheel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
