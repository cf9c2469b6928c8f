"""Facts that live in one module and must hold wherever the project relies on them: the native
pin (also in pyproject.toml), a build script that runs before anything is installed, module names."""
import ast
import importlib.util
import sys
from pathlib import Path

from mtpchat import native

ROOT = Path(__file__).resolve().parent.parent


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"_test_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_llama_cpp_python_pin_agrees_everywhere():
    pin = native.LLAMA_CPP_PYTHON_VERSION
    assert f'"llama-cpp-python=={pin}"' in (ROOT / "pyproject.toml").read_text()
    build = _load(ROOT / "native" / "build.py")
    assert build.VERSION == pin and build.SDIST_SHA256 == native.SDIST_SHA256
    assert build.cache_dir() == native.cache_dir()
    from mtpchat.convert import hf_base

    assert hf_base.SDIST_VERSION == pin and hf_base.cache_dir() == native.cache_dir()


def test_the_native_build_needs_only_the_standard_library():
    for path in (ROOT / "native" / "build.py", ROOT / "mtpchat" / "native.py"):
        tree = ast.parse(path.read_text())
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
        assert names <= set(sys.stdlib_module_names) | {"__future__"}, (path.name, names - set(sys.stdlib_module_names))


def test_no_module_shadows_the_standard_library():
    """A module named like a standard one (inspect.py was) shadows it for scripts run from its folder."""
    names = {p.stem for folder in ("mtpchat", "convert", "train") for p in (ROOT / folder).glob("*.py")}
    assert not {n for n in names if not n.startswith("__")} & set(sys.stdlib_module_names)
