"""The package installs as a wheel: `pip wheel --no-build-isolation` builds one from a copy
of the source tree, inside a second virtual environment that has `wheel` and the newest
setuptools, and the wheel installed there imports `snlt_fast._C` and runs `snlt`.

The second environment sees torch and the other dependencies through a path file
pointing at the running environment's site-packages (installing torch again would take
gigabytes), but not the running environment's editable install of snlt_fast.

Building compiles the C++ extension from scratch (CPU kernels only), which takes minutes,
so this runs only with SNLT_FAST_WHEEL_CHECK=1, which `make test` (and so CI) sets;
`make wheel-check` runs it alone.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "setup.py", "README.md", "csrc", "kernels", "snlt_fast")

pytestmark = pytest.mark.skipif(
    os.environ.get("SNLT_FAST_WHEEL_CHECK") != "1", reason="builds the extension from scratch: make wheel-check"
)


def _run(*command, cwd=None, env=None):
    result = subprocess.run([str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(map(str, command))}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def test_a_wheel_installs_into_a_second_environment_and_imports_the_extension(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            # snlt_fast/kernels stays a symlink to ../kernels, as in a clone.
            shutil.copytree(ROOT / name, source / name, symlinks=True, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)

    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    _run(python, "-m", "pip", "install", "--quiet", "--upgrade", "setuptools", "wheel")
    site_packages = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    (site_packages / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    environment = dict(os.environ, SNLT_FAST_NO_CUDA="1")
    _run(python, "-m", "pip", "wheel", "--quiet", "--no-build-isolation", "--no-deps", "-w", tmp_path / "dist", source,
         env=environment)  # fmt: skip
    [wheel] = (tmp_path / "dist").glob("snlt_fast-0.1.0-*.whl")
    _run(python, "-m", "pip", "install", "--quiet", "--no-deps", wheel)

    check = textwrap.dedent(
        """
        import importlib.resources, torch, snlt_fast, snlt_fast._C, snlt_fast.kernels
        print(snlt_fast._C.__file__)
        assert "cpu" in snlt_fast.available_backends()
        out = snlt_fast.xcorr_depthwise(torch.ones(1, 2, 5, 5), torch.ones(1, 2, 3, 3), backend="cpu")
        assert out.shape == (1, 2, 3, 3) and bool((out == 9).all())
        assert any(importlib.resources.files("snlt_fast.training").joinpath("configs").iterdir())
        """
    )
    # -P and a neutral folder: nothing may come from the source tree.
    extension = _run(python, "-P", "-c", check, cwd=tmp_path).strip()
    assert Path(extension).is_relative_to(site_packages), extension
    assert "usage: snlt" in _run(venv / "bin" / "snlt", "--help", cwd=tmp_path)
