"""Hugging Face base weights → GGUF with llama.cpp's own converter (convert_hf_to_gguf.py).

The converter comes from the same pinned llama-cpp-python source distribution the native build
uses (its vendor/llama.cpp), so tensor names, Q/K permutation and tokenizer handling match the
libllama that loads the result. It needs torch and transformers (the `train` extra) and runs as
a subprocess with this interpreter. Q4_0 is made from an F16 file with llama.cpp's quantiser
(`llama_model_quantize` in the libllama already loaded), as llama-quantize would.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from mtpchat.native import LLAMA_CPP_PYTHON_VERSION as SDIST_VERSION
from mtpchat.native import cache_dir

from .checkpoint import FILES, PICKLE_SUFFIXES, ConvertError

VENDOR = f"llama_cpp_python-{SDIST_VERSION}/vendor/llama.cpp/"
NEEDED = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")
# --outtype → convert_hf_to_gguf's --outtype; keep = the weights' own float type (source_type),
# q4_0 goes through f16 and llama.cpp's quantiser
OUTTYPES = {"keep": None, "f16": "f16", "q8_0": "q8_0", "q4_0": "f16"}
ST_TO_OUTTYPE = {"F32": "f32", "F16": "f16", "BF16": "bf16"}
SKIP_IN_STAGING = {*FILES, "adapter_config.json"}   # the checkpoint's own files, PEFT's config


def missing_modules() -> list[str]:
    return [m for m in ("torch", "transformers", "safetensors", "sentencepiece") if importlib.util.find_spec(m) is None]


def _sdist() -> Path:
    sdist = cache_dir() / "sdist" / f"llama_cpp_python-{SDIST_VERSION}.tar.gz"
    if sdist.exists():
        return sdist
    # a source checkout can fetch it with the native build's hash-pinned download
    build = Path(__file__).resolve().parent.parent / "native" / "build.py"
    if build.is_file():
        spec = importlib.util.spec_from_file_location("_mtpchat_native_build", build)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        try:
            return mod.fetch_sdist(cache_dir())
        except (subprocess.CalledProcessError, OSError) as e:
            raise ConvertError(f"cannot download the llama-cpp-python {SDIST_VERSION} source: {e}") from None
    raise ConvertError(f"llama.cpp's converter is not available: run native/build.py once to cache "
                       f"the llama-cpp-python {SDIST_VERSION} source ({sdist})")


def converter_script() -> Path:
    """convert_hf_to_gguf.py extracted (once) from the pinned sdist into the cache."""
    dest = cache_dir() / f"convert-hf-{SDIST_VERSION}"
    script = dest / "convert_hf_to_gguf.py"
    if script.is_file():
        return script
    sdist = _sdist()
    tmp = dest.with_name(dest.name + f".{os.getpid()}.tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(VENDOR)
                       and m.name[len(VENDOR):].startswith(NEEDED) and (m.isfile() or m.isdir())]
            for m in members:
                m.name = m.name[len(VENDOR):]
            kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(tmp, members=members, **kw)
        if not (tmp / "convert_hf_to_gguf.py").is_file():
            raise ConvertError(f"{sdist.name} has no vendor/llama.cpp/convert_hf_to_gguf.py")
        os.replace(tmp, dest)  # atomic: a half-extracted converter is never used
    except (OSError, tarfile.TarError) as e:
        raise ConvertError(f"cannot extract llama.cpp's converter: {e}") from None
    finally:
        if tmp.exists():
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
    return script


def source_type(folder: Path) -> str:
    """The float type most of the base's weights are stored in, as a converter --outtype."""
    from .tensorfile import TensorFileError, read_header

    counts: dict[str, int] = {}
    for f in sorted(folder.glob("model*.safetensors")):
        try:
            header, _ = read_header(f)
        except TensorFileError as e:
            raise ConvertError(str(e)) from None
        for e in header.values():
            n = e["data_offsets"][1] - e["data_offsets"][0]
            counts[e["dtype"]] = counts.get(e["dtype"], 0) + n
    best = max(counts, key=counts.get) if counts else "BF16"
    return ST_TO_OUTTYPE.get(best, "auto")


def stage(folder: Path, into: Path) -> Path:
    """A folder of links to the base model's files only: no MTP files, and never a pickle, so the
    converter cannot fall back to torch.load on anything."""
    into.mkdir(parents=True, exist_ok=True)
    for f in folder.iterdir():
        if f.is_file() and f.name not in SKIP_IN_STAGING and f.suffix not in PICKLE_SUFFIXES:
            (into / f.name).symlink_to(f.resolve())
    return into


def convert_hf(folder: Path, out: Path, outtype: str, workdir: Path) -> Path:
    """Convert the HF model in `folder` to `out` (a GGUF) with llama.cpp's converter."""
    if missing := missing_modules():
        raise ConvertError(f"converting a Hugging Face base needs {', '.join(missing)}: "
                           f"pip install 'mtpchat[train]' (or pass --base MODEL.gguf)")
    if outtype not in OUTTYPES:
        raise ConvertError(f"--outtype {outtype} is not supported (choose {', '.join(OUTTYPES)})")
    script = converter_script()
    staged = stage(folder, workdir / "hf-base")
    first = out if outtype != "q4_0" else workdir / "base-f16.gguf"
    env = dict(os.environ, PYTHONPATH=str(script.parent))
    cmd = [sys.executable, str(script), str(staged), "--outfile", str(first), "--outtype", OUTTYPES[outtype] or source_type(folder)]
    r = subprocess.run(cmd, cwd=script.parent, env=env, capture_output=True, text=True)
    if r.returncode != 0 or not first.is_file():
        lines = [ln for ln in (r.stderr + r.stdout).splitlines() if ln.strip()]
        last = next((ln for ln in reversed(lines) if "Error" in ln or "error" in ln), lines[-1] if lines else "")
        raise ConvertError(f"llama.cpp's convert_hf_to_gguf.py failed: {last.strip()}")
    if outtype == "q4_0":
        quantize(first, out, "q4_0")
        first.unlink()
    return out


def quantize(src: Path, dst: Path, outtype: str) -> None:
    """llama.cpp's own quantiser, as llama-quantize runs it (its per-tensor type choices included)."""
    from mtpchat import binding as B

    try:
        B.quantize_model(src, dst, outtype)
    except B.LlamaError:
        raise ConvertError(f"llama.cpp could not quantise the base to {outtype.upper()}") from None
