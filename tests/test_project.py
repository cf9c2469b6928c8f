"""Facts that live in one module and must hold wherever the project relies on them: the native
pin (also in pyproject.toml), a build script that runs before anything is installed, module names."""
import ast
import re
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


def _exported(lib: Path) -> list[str]:
    out = subprocess.run(["nm", "-D", "--defined-only", "-C", str(lib)], capture_output=True, text=True, check=True)
    # "ADDRESS TYPE NAME", NAME demangled (it may contain spaces)
    return [line.split(None, 2)[-1] for line in out.stdout.splitlines() if len(line.split(None, 2)) == 3]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="native/exports.map is applied on Linux only")
@pytest.mark.skipif(shutil.which("nm") is None, reason="needs binutils' nm to list the libraries' exports")
def test_the_built_libraries_export_their_c_api_and_no_std_symbols():
    """The libstdc++ clash (a CUDA build crashed in std::regex) cannot recur: the installed
    libllama and ggml libraries export no C++ standard library symbols, yet all of llama.cpp's
    and mtpchat's C API."""
    import llama_cpp

    libs = sorted(p for p in (Path(llama_cpp.__file__).parent / "lib").glob("lib*.so*") if not p.is_symlink())
    assert any(p.name.startswith("libllama.") for p in libs)
    for lib in libs:
        names = _exported(lib)
        # the standard library's own symbols (functions, vtables, typeinfo); llama.cpp's C++
        # functions that merely take std:: arguments are its own and may stay
        leaked = [n for n in names if re.match(r"(std::|__gnu_cxx::)", n) or re.search(r"for (std::|__gnu_cxx::)", n)]
        assert not leaked, f"{lib.name} exports {len(leaked)} std:: symbols, e.g. {leaked[:3]}"
        if lib.name.startswith("libllama."):
            for fn in ("llama_decode", "llama_mtp_step", "llama_mtp_head_init", "llama_adapter_lora_set_gate_tokens"):
                assert fn in names, f"{lib.name} lost {fn}"
