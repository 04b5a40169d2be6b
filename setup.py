"""Build of parrot's C core as the CPython extension ``parrot._core`` (distribution ``parrot-vlm``).

The core links OpenBLAS (cblas), libpng, libjpeg and utf8proc, found with pkg-config when the extension is
built (not when an sdist or metadata is made). If anything is missing, the build stops with ONE error that
names every missing library and gives the one command that installs them all (docs/install.md has the
dnf/brew names).

Where OpenBLAS comes from (``PARROT_BLAS``):
  system            (default) the system's OpenBLAS through pkg-config (Debian: libopenblas-dev)
  scipy-openblas32  the OpenBLAS numpy and SciPy ship, from the PyPI package scipy-openblas32; what
                    scripts/build-wheels.sh uses (built for manylinux, no Fortran runtime). Its symbols carry
                    a ``scipy_`` prefix: blas_prefix_macros() maps the names csrc/ uses, so the C code keeps
                    calling plain cblas_sgemm / openblas_set_num_threads either way.

Kernels for one instruction set live in files named ``*_avx2.c``, ``*_avx512.c`` or ``*_neon.c``; only those
files get the matching ``-m`` flags, and the right kernel is picked at run time from the CPU's features, so
one build runs on any x86-64 (or aarch64) CPU. There is no ``-march=native``.

Other environment switches:
  PARROT_SANITIZE=1  build with AddressSanitizer + UndefinedBehaviorSanitizer (see README, "Sanitizers")
  PARROT_DEBUG=1     -O0 -g
  PARROT_EMULATE_AVX512=1  for developers on CPUs without AVX-512: compile kernels_avx512.c against SIMDe's
                     portable AVX-512 (Debian libsimde-dev) and offer it as the "avx512" table, so the code
                     that runs on AVX-512 + BF16 + VNNI machines can be tested anywhere (slow; never ship it)
"""
import glob
import os
import platform
import re
import shutil
import subprocess
import sysconfig

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


class Lib:
    def __init__(self, pc, what, apt, dnf, brew):
        self.pc, self.what, self.apt, self.dnf, self.brew = pc, what, apt, dnf, brew


# what the core links, by pkg-config name, with the package that provides it on Debian / Fedora / Homebrew
OPENBLAS = Lib("openblas", "OpenBLAS", "libopenblas-dev", "openblas-devel", "openblas")
LIBS = [OPENBLAS,
        Lib("libpng", "libpng", "libpng-dev", "libpng-devel", "libpng"),
        Lib("libjpeg", "libjpeg", "libjpeg-dev", "libjpeg-turbo-devel", "jpeg-turbo"),
        Lib("libutf8proc", "utf8proc", "libutf8proc-dev", "utf8proc-devel", "utf8proc")]
PKG_CONFIG = Lib("pkg-config", "pkg-config", "pkg-config", "pkgconf-pkg-config", "pkg-config")
COMPILER = Lib("cc", "a C compiler", "build-essential", "gcc", None)
BLAS_CHOICES = ("system", "scipy-openblas32")


class MissingLibraries(SystemExit):
    """One error for everything missing, with the one command that installs it all."""

    def __init__(self, missing):
        names = ", ".join(lib.what for lib in missing)
        if PKG_CONFIG in missing:  # then no library could be looked for: name them all, apt skips what is there
            names = ", ".join(lib.what for lib in missing if lib not in LIBS) + " (so " + \
                ", ".join(lib.what for lib in LIBS) + " could not be looked for)"
        line = lambda tool, attr: " ".join([tool] + [getattr(l, attr) for l in missing if getattr(l, attr)])
        super().__init__(
            f"parrot-vlm build: missing {names}. Install everything at once with:\n"
            f"    {line('apt-get install', 'apt')}\n"
            f"  (Fedora/RHEL: {line('dnf install', 'dnf')}; macOS: {line('brew install', 'brew')})\n"
            "  then build again. Or install the prebuilt wheel, which needs none of this: pip install parrot-vlm")


def pkg_config(name):
    """(include dirs, library dirs, libraries, macros) of a pkg-config package, or None when it is missing."""
    try:
        out = subprocess.check_output(["pkg-config", "--cflags", "--libs", name], stderr=subprocess.PIPE)
    except subprocess.CalledProcessError:
        return None
    flags = out.decode().split()
    inc = [f[2:] for f in flags if f.startswith("-I")]
    libdirs = [f[2:] for f in flags if f.startswith("-L")]
    libs = [f[2:] for f in flags if f.startswith("-l")]
    defs = [tuple((f[2:].split("=", 1) + [None])[:2]) for f in flags if f.startswith("-D")]
    return inc, libdirs, libs, defs


def scipy_openblas():
    """OpenBLAS from the scipy-openblas32 package, in pkg_config()'s form, or None when it is not installed."""
    try:
        import scipy_openblas32 as sob
    except ImportError:
        return None
    inc = sob.get_include_dir()
    return [inc], [sob.get_lib_dir()], [sob.get_library()], blas_prefix_macros(os.path.join(inc, "cblas.h"))


def blas_prefix_macros(header):
    """``name=scipy_name`` for every cblas_* / openblas_* name the core uses that the header declares prefixed."""
    with open(header) as f:
        declared = set(re.findall(r"\bscipy_(\w+)\s*\(", f.read()))
    used = set()
    for path in sources() + headers():
        with open(path) as f:
            used |= set(re.findall(r"\b((?:cblas|openblas)_\w+)\s*\(", f.read()))
    return [(name, "scipy_" + name) for name in sorted(used & declared)]


def find_libraries():
    """Every library's flags, or MissingLibraries naming all that are missing (never just the first)."""
    blas = os.environ.get("PARROT_BLAS", "system")
    if blas not in BLAS_CHOICES:
        raise SystemExit(f"parrot-vlm build: PARROT_BLAS={blas!r}; expected one of: {', '.join(BLAS_CHOICES)}")
    missing, found = [], []
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(os.environ.get("CC", cc).split()[0]) is None:
        missing.append(COMPILER)
    have_pkg_config = shutil.which("pkg-config") is not None
    if not have_pkg_config:
        missing.append(PKG_CONFIG)
    for lib in LIBS:
        if lib is OPENBLAS and blas == "scipy-openblas32":
            flags = scipy_openblas()
            if flags is None:
                raise SystemExit("parrot-vlm build: PARROT_BLAS=scipy-openblas32 needs the package installed in "
                                 "this Python: pip install scipy-openblas32")
        else:
            flags = pkg_config(lib.pc) if have_pkg_config else None  # without pkg-config nothing can be found
        if flags is None:
            missing.append(lib)
        else:
            found.append(flags)
    if missing:
        raise MissingLibraries(missing)
    return found


def isa_flags(path):
    """Per-file instruction-set flags for SIMD kernel files; None if the file does not fit this machine."""
    machine = platform.machine().lower()
    x86 = machine in ("x86_64", "amd64", "i686", "i386")
    arm = machine in ("aarch64", "arm64")
    base = os.path.basename(path)
    if base.endswith("_avx2.c"):
        # loops on 32-byte boundaries: the q4_0 row loop ran 7 % slower when a change elsewhere in the file moved
        # it off one (the same instructions; 5504 x 2048 weights, 36.9 -> 34.1 GB/s, one thread)
        return ["-mavx2", "-mfma", "-mf16c", "-falign-loops=32"] if x86 else None
    if base.endswith("_avx512.c"):
        if os.environ.get("PARROT_EMULATE_AVX512"):
            return ["-mavx2", "-mfma", "-mf16c", "-DPR_EMULATE_AVX512"] if x86 else None
        return (["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512bf16", "-mavx512vnni",
                 "-mavx2", "-mfma", "-mf16c"] if x86 else None)
    if base.endswith("_neon.c"):
        return [] if arm else None
    return []


def sources():
    return sorted(glob.glob(os.path.join("csrc", "**", "*.c"), recursive=True))


def headers():
    return sorted(glob.glob(os.path.join("csrc", "**", "*.h"), recursive=True))


def configure(ext):
    """Fills in the extension's libraries and flags; done at build time so sdists and metadata need no libraries."""
    import numpy

    ext.include_dirs = [os.path.join(HERE, "csrc"), numpy.get_include()]
    ext.define_macros = [("NPY_NO_DEPRECATED_API", "NPY_1_20_API_VERSION")]
    for inc, libdirs, libs, defs in find_libraries():
        ext.include_dirs += inc
        ext.library_dirs += libdirs
        ext.libraries += libs
        ext.define_macros += defs
    cflags = ["-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fvisibility=hidden",
              "-D_GNU_SOURCE", "-pthread"]
    ldflags = ["-pthread", "-lm"]
    if os.environ.get("PARROT_SANITIZE"):
        san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"]
        cflags += san + ["-O1", "-g"]
        ldflags += san
    elif os.environ.get("PARROT_DEBUG"):
        cflags += ["-O0", "-g"]
    else:
        cflags += ["-O3"]
    if os.environ.get("PARROT_EMULATE_AVX512"):
        ext.define_macros.append(("PR_EMULATE_AVX512", "1"))
    # runtime search path so the OpenBLAS we compiled against is the one we load (auditwheel rewrites it)
    ldflags += [f"-Wl,-rpath,{d}" for d in ext.library_dirs]
    ext.extra_compile_args, ext.extra_link_args = cflags, ldflags
    ext.depends = headers()


class BuildExt(build_ext):
    """Finds the libraries, then compiles SIMD kernel files with their own flags and the rest as usual."""

    def build_extension(self, ext):
        configure(ext)
        plain, special = [], []
        for src in ext.sources:
            flags = isa_flags(src)
            if flags is None:
                continue
            (special if flags else plain).append((src, flags))
        objects = []
        for src, flags in special:
            objects += self.compiler.compile(
                [src], output_dir=self.build_temp, include_dirs=ext.include_dirs,
                macros=ext.define_macros, extra_postargs=ext.extra_compile_args + flags,
                depends=ext.depends)
        ext.sources = [s for s, _ in plain]
        ext.extra_objects = list(ext.extra_objects or []) + objects
        # the library is relinked only when a source or dependency is newer: count the SIMD files too
        ext.depends = list(ext.depends) + [s for s, _ in special]
        super().build_extension(ext)


setup(ext_modules=[Extension("parrot._core", sources=sources())], cmdclass={"build_ext": BuildExt})
