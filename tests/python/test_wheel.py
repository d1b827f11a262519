"""The wheel, end to end: built from this checkout, installed into a bare
virtual environment (no system site-packages, so never the lmcache installed
there), used from Python, and used from C through lmcache.get_include() and
lmcache.get_library_dir() with the system compiler.

What the wheel needs at run time (asserted below through readelf): libc,
libstdc++6, libgcc-s1, OpenSSL 3 (libssl3: libssl, libcrypto), libzstd1 and
liblz4-1, plus numpy and pyyaml from PyPI. xxHash and liburing are linked in
from their static archives (LMCACHE_STATIC_DEPS=ON in pyproject.toml), so
neither their -dev packages nor their shared libraries are needed.

The build takes a couple of minutes: one per session, in a build directory
of its own (the default build/{wheel_tag} is other builds'). Set
LMCACHE_WHEEL_BUILD_DIR to keep one between runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
C_TEST = REPO / "tests" / "cpp" / "c_api" / "test_c_api.c"

pytestmark = pytest.mark.skipif(
    shutil.which("cc") is None,
    reason="no C compiler (cc): the wheel is built here and its C API is compiled against",
)

# The packages the wheel may not need at run time (their -dev packages, and,
# linked statically, their shared libraries too).
STATIC_DEPS = {"libxxhash": "xxhash", "liburing": "uring"}


def _run(cmd, *, timeout, **kw):
    """Runs cmd; on failure, fails the test with the command's output."""
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)
    if r.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, cmd))} exited {r.returncode}\n"
            f"--- stdout (tail)\n{r.stdout[-6000:]}\n--- stderr (tail)\n{r.stderr[-6000:]}"
        )
    return r


def _clean_env():
    """The environment minus whatever could pull in another lmcache or library."""
    env = dict(os.environ)
    for k in ("PYTHONPATH", "PYTHONHOME", "LD_LIBRARY_PATH", "LD_PRELOAD", "VIRTUAL_ENV"):
        env.pop(k, None)
    return env


@pytest.fixture(scope="module")
def work():
    """The module's folder, removed at the end. Not pytest's tmp_path: pytest
    runs started meanwhile (others', on a shared machine) prune those."""
    with tempfile.TemporaryDirectory(prefix="lmcache-wheel-test-") as d:
        yield Path(d)


@pytest.fixture(scope="module")
def wheel(work) -> Path:
    out = work / "wheel"
    build_dir = os.environ.get("LMCACHE_WHEEL_BUILD_DIR") or work / "build"
    _run(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-build-isolation", "--no-deps",
         "-w", out, f"-Cbuild-dir={build_dir}"],
        cwd=REPO, timeout=1800, env=_clean_env(),
    )
    wheels = list(out.glob("lmcache-*.whl"))
    assert len(wheels) == 1, wheels
    names = set(zipfile.ZipFile(wheels[0]).namelist())
    assert "lmcache/include/lmcache/lmcache.h" in names
    # One copy of the C library: a wheel holds no symlinks, so no .so.0 beside it.
    assert sorted(n for n in names if n.startswith("lmcache/lib/")) == ["lmcache/lib/liblmcache.so"]
    assert any(re.fullmatch(r"lmcache/_core\..*\.so", n) for n in names), sorted(names)
    return wheels[0]


@pytest.fixture(scope="module")
def venv(wheel, work) -> Path:
    root = work / "venv"
    env = _clean_env()
    # No --system-site-packages: only the wheel and what it pulls from PyPI.
    _run([sys.executable, "-m", "venv", root], timeout=300, env=env)
    _run([root / "bin" / "python", "-m", "pip", "install", wheel], timeout=900, env=env)
    return root


@pytest.fixture(scope="module")
def installed(venv, work) -> dict:
    """The wheel used from Python in the venv; what it reports."""
    cwd = work / "py"  # not the checkout, so never python/lmcache
    cwd.mkdir()
    snippet = r"""
import json, os, sys
import lmcache

engine = lmcache.CacheEngine(lmcache.Config(l1_capacity_gb=0.01), model_id="wheel-test")
engine.set_kv_shape(num_layers=2, num_heads=2, head_dim=64, dtype="float16")
tokens = list(range(4 * engine.chunk_size))
keys = engine.chunk_keys(tokens)  # xxHash, linked into _core
assert len(keys) == 4 and len(set(keys)) == 4, keys
assert engine.lookup(tokens) == 0
engine.close()

# The disk tier (liburing when the kernel allows io_uring, else threads).
disk = lmcache.CacheEngine(lmcache.Config(l1_capacity_gb=0.01, local_disk_path=os.path.join(os.getcwd(), "disk"),
                                          disk_capacity_gb=0.01), model_id="wheel-test")
backend = disk.disk_backend
disk.close()
print(json.dumps({"file": lmcache.__file__, "include": lmcache.get_include(),
                  "libdir": lmcache.get_library_dir(), "prefix": sys.prefix, "disk_backend": backend}))
"""
    r = _run([venv / "bin" / "python", "-c", snippet], cwd=cwd, timeout=300, env=_clean_env())
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_python_uses_the_wheel(venv, installed):
    root = venv.resolve()
    assert Path(installed["prefix"]).resolve() == root
    for k in ("file", "include", "libdir"):
        assert Path(installed[k]).resolve().is_relative_to(root), (k, installed[k], root)
    assert (Path(installed["include"]) / "lmcache" / "lmcache.h").is_file()
    assert (Path(installed["libdir"]) / "liblmcache.so").is_file()
    assert installed["disk_backend"].startswith(("io_uring", "threads")), installed["disk_backend"]


def test_c_program_builds_and_runs_against_the_wheel(venv, installed, work):
    inc, libdir = installed["include"], installed["libdir"]
    cdir = work / "c"
    cdir.mkdir()
    prog = cdir / "test_c_api"
    _run(["cc", "-std=gnu11", "-O1", C_TEST, f"-I{inc}", f"-L{libdir}", "-llmcache",
          f"-Wl,-rpath,{libdir}", "-o", prog], timeout=300)
    # Found through the RPATH alone (_clean_env drops LD_LIBRARY_PATH).
    ldd = _run(["ldd", prog], timeout=60, env=_clean_env()).stdout
    m = re.search(r"liblmcache\.so => (\S+)", ldd)
    assert m and Path(m.group(1)).resolve().is_relative_to(venv.resolve()), ldd
    r = _run([prog], cwd=cdir, timeout=600, env=_clean_env())
    assert "test_c_api: ok" in r.stdout, r.stdout + r.stderr


def _static_archive_missing(pc: str, name: str) -> bool:
    """True when the build fell back to lib<name>.so: its pkg-config module is
    there but lib<name>.a is not beside it (the CMake logic's own test)."""
    r = subprocess.run(["pkg-config", "--variable=libdir", pc], capture_output=True, text=True)
    if r.returncode != 0:
        return False  # not installed: not linked at all, so never NEEDED either
    return not (Path(r.stdout.strip()) / f"lib{name}.a").exists()


def test_no_xxhash_or_liburing_needed_at_run_time(venv, installed):
    if shutil.which("readelf") is None:
        pytest.fail("readelf (binutils) is missing: cc is here, so it should be too")
    package = Path(installed["file"]).parent
    libs = sorted(p for p in package.rglob("*.so*") if p.is_file())
    assert any(p.name.startswith("_core") for p in libs) and any(p.name == "liblmcache.so" for p in libs), libs
    needed = {}
    for lib in libs:
        out = _run(["readelf", "-d", lib], timeout=60).stdout
        needed[lib.name] = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)
        # Whatever is linked in statically stays private (--exclude-libs): a
        # program that loads another xxHash or liburing must not bind to ours.
        syms = _run(["nm", "-D", "--defined-only", lib], timeout=60).stdout
        leaked = [s for s in syms.split() if s.startswith(("XXH", "io_uring_"))]
        assert not leaked, (lib.name, leaked[:10])
    print("NEEDED:", json.dumps(needed, indent=1))

    fell_back = [f"lib{name}.a" for pc, name in STATIC_DEPS.items() if _static_archive_missing(pc, name)]
    checked = [name for pc, name in STATIC_DEPS.items() if f"lib{name}.a" not in fell_back]
    for lib, entries in needed.items():
        bad = [e for e in entries if any(e.startswith(f"lib{n}.") for n in checked)]
        assert not bad, f"{lib} needs {bad} at run time: the static archive was not linked"
    if fell_back:
        pytest.skip(f"{', '.join(fell_back)} not installed here (Debian: liburing-dev, libxxhash-dev ship them): "
                    "the build linked the shared library instead, so its NEEDED entry is expected")
