"""Where the checkpoint and the base come from: local folders, GGUF files or Hugging Face repos.

Downloads go through huggingface_hub into its standard cache (token and offline mode from the
usual environment). Only safetensors, JSON and tokenizer files are fetched: pickled weights are
never downloaded, let alone loaded.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from .checkpoint import PICKLE_SUFFIXES, ConvertError

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
HUB_GGUF = re.compile(r"^([A-Za-z0-9][\w.-]*/[\w.-]+):(.+\.gguf)$")
# what a checkpoint or an HF base needs; pickles (*.bin, *.pt) are deliberately absent
ALLOW = ["*.json", "*.safetensors", "tokenizer.model", "*.tiktoken", "*.txt", "*.jinja"]
BASE_WEIGHTS = re.compile(r"^model(-\d+-of-\d+)?\.safetensors$")


def looks_like_repo(s: str) -> bool:
    return bool(REPO_ID.match(s)) and not s.startswith((".", "/"))


def _hub_call(what: str, fn, *args, **kwargs):
    """Run a huggingface_hub download, turning its many exceptions into one clear line."""
    from huggingface_hub import errors as E

    try:
        return fn(*args, **kwargs)
    except E.RepositoryNotFoundError:
        raise ConvertError(f"{what}: no such Hugging Face repo (or it is private: log in or set HF_TOKEN)") from None
    except E.RevisionNotFoundError:
        raise ConvertError(f"{what}: no such revision") from None
    except E.GatedRepoError:
        raise ConvertError(f"{what}: the repo is gated: accept its terms on huggingface.co and set HF_TOKEN") from None
    except E.LocalEntryNotFoundError:
        raise ConvertError(f"{what} is not in the local Hugging Face cache and downloads are off "
                           f"(HF_HUB_OFFLINE) or the Hub cannot be reached") from None
    except E.EntryNotFoundError:
        raise ConvertError(f"{what}: file not found in the repo") from None
    except E.HfHubHTTPError as e:
        raise ConvertError(f"{what}: download failed: {str(e).splitlines()[0]}") from None
    except Exception as e:  # network errors come from httpx/requests, whose classes vary by version
        raise ConvertError(f"{what}: download failed ({type(e).__name__}): {e}") from None


def download_repo(repo: str, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download

    return Path(_hub_call(repo, snapshot_download, repo, revision=revision, allow_patterns=ALLOW))


def resolve_src(src: str, revision: str | None) -> tuple[Path, bool]:
    """The checkpoint folder for SRC and whether it was downloaded."""
    p = Path(src).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ConvertError(f"{src} is a file: SRC must be a checkpoint folder or a Hugging Face repo id")
        return p, False
    if looks_like_repo(src):
        return download_repo(src, revision), True
    raise ConvertError(f"{src}: no such folder, and not a Hugging Face repo id (org/name)")


def pickled_weights(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.suffix in PICKLE_SUFFIXES and f.is_file())


def has_hf_weights(folder: Path) -> bool:
    """True when `folder` holds a full Hugging Face model (config.json and safetensors weights).

    A config.json with only pickled weights is refused here rather than silently ignored."""
    if not (folder / "config.json").is_file():
        return False
    if (folder / "model.safetensors.index.json").is_file() or any(BASE_WEIGHTS.match(f.name) for f in folder.iterdir()):
        return True
    pickles = [f.name for f in pickled_weights(folder) if f.name.startswith(("pytorch_model", "model"))]
    if pickles:
        raise ConvertError(f"{pickles[0]} is a pickle file: mtpchat reads only safetensors and never unpickles "
                           f"downloaded files (save the base model with safe_serialization=True)")
    return False


def hf_config(folder: Path) -> dict:
    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConvertError(f"{folder / 'config.json'} is not readable JSON: {e}") from None
    except RecursionError:
        raise ConvertError(f"{folder / 'config.json'} is not readable JSON: nested too deeply") from None
    if not isinstance(cfg, dict):
        raise ConvertError(f"{folder / 'config.json'} must hold a JSON object")
    # multimodal configs (Gemma 3) keep the language model's numbers under text_config
    return {**cfg, **cfg["text_config"]} if isinstance(cfg.get("text_config"), dict) else cfg


def resolve_base(base: str, revision: str | None) -> tuple[str, Path]:
    """("gguf", file) or ("hf", folder) for --base."""
    p = Path(base).expanduser()
    if p.is_file():
        with open(p, "rb") as f:
            if f.read(4) != b"GGUF":
                raise ConvertError(f"--base {base} is not a GGUF file")
        return "gguf", p
    if p.is_dir():
        if has_hf_weights(p):
            return "hf", p
        ggufs = sorted(p.glob("*.gguf"))
        hint = f" (it has {ggufs[0].name}: pass that file)" if ggufs else ""
        raise ConvertError(f"--base {base} is neither a GGUF file nor a Hugging Face model folder{hint}")
    if m := HUB_GGUF.match(base):
        from huggingface_hub import hf_hub_download

        return "gguf", Path(_hub_call(base, hf_hub_download, m.group(1), m.group(2), revision=revision))
    if looks_like_repo(base):
        folder = download_repo(base, revision)
        if not has_hf_weights(folder):
            raise ConvertError(f"--base {base} has no safetensors model (for a GGUF repo use {base}:FILE.gguf)")
        return "hf", folder
    raise ConvertError(f"--base {base}: no such file or folder, and not a Hugging Face repo id")
