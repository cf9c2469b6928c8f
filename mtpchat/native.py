"""What mtpchat's native build is pinned to, and where it caches what it downloads and builds.

Standard library only: native/build.py loads this file by its path before mtpchat (or anything
else) is installed, and pyproject.toml pins the same version (tests/test_project.py checks it).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

# the llama-cpp-python source distribution whose vendor/llama.cpp native/patches apply to
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"


def cache_dir() -> Path:
    """$MTPCHAT_CACHE, else $XDG_CACHE_HOME/mtpchat, else ~/.cache/mtpchat: the sdist, the built
    wheels and llama.cpp's extracted converter live here."""
    root = os.environ.get("MTPCHAT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mtpchat")
    return Path(root)


def sha256(path: str | Path) -> str:
    """SHA-256 of a file, read in blocks (the sdist, a built model)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
