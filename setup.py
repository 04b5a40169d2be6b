"""Build of parrot's C core as the CPython extension ``parrot._core``.

System libraries are found with pkg-config: OpenBLAS (cblas), libpng, libjpeg and utf8proc. A missing one
stops the build with the Debian package to install.

Kernels for one instruction set live in files named ``*_avx2.c``, ``*_avx512.c`` or ``*_neon.c``; only those
files get the matching ``-m`` flags, and the right kernel is picked at run time from the CPU's features, so
one build runs on any x86-64 (or aarch64) CPU. There is no ``-march=native``.

Environment switches:
  PARROT_SANITIZE=1  build with AddressSanitizer + UndefinedBehaviorSanitizer (see README, "Sanitizers")
  PARROT_DEBUG=1     -O0 -g
  PARROT_EMULATE_AVX512=1  for developers on CPUs without AVX-512: compile kernels_avx512.c against SIMDe's
                     portable AVX-512 (Debian libsimde-dev) and offer it as the "avx512" table, so the code
                     that runs on AVX-512 + BF16 + VNNI machines can be tested anywhere (slow; never ship it)
"""
import glob
import os
import platform
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))

# pkg-config name -> Debian package that provides it
SYSTEM_LIBS = {
    "openblas": "libopenblas-dev",
    "libpng": "libpng-dev",
    "libjpeg": "libjpeg-dev",
    "libutf8proc": "libutf8proc-dev",
}


def pkg_config(name):
    if shutil.which("pkg-config") is None:
        sys.exit("parrot build: pkg-config is not installed; run: apt-get install pkg-config "
                 + " ".join(SYSTEM_LIBS.values()))
    try:
        out = subprocess.check_output(["pkg-config", "--cflags", "--libs", name], stderr=subprocess.PIPE)
    except subprocess.CalledProcessError:
        sys.exit(f"parrot build: the system library '{name}' was not found by pkg-config; "
                 f"install it with: apt-get install {SYSTEM_LIBS[name]}")
    flags = out.decode().split()
    inc = [f[2:] for f in flags if f.startswith("-I")]
    libdirs = [f[2:] for f in flags if f.startswith("-L")]
    libs = [f[2:] for f in flags if f.startswith("-l")]
    defs = [tuple((f[2:].split("=", 1) + [None])[:2]) for f in flags if f.startswith("-D")]
    return inc, libdirs, libs, defs


def isa_flags(path):
    """Per-file instruction-set flags for SIMD kernel files; None if the file does not fit this machine."""
    machine = platform.machine().lower()
    x86 = machine in ("x86_64", "amd64", "i686", "i386")
    arm = machine in ("aarch64", "arm64")
    base = os.path.basename(path)
    if base.endswith("_avx2.c"):
        return ["-mavx2", "-mfma", "-mf16c"] if x86 else None
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


class BuildExt(build_ext):
    """Compiles SIMD kernel files with their own flags, then the rest as usual."""

    def build_extension(self, ext):
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
        super().build_extension(ext)


def make_extension():
    import numpy

    include_dirs = [os.path.join(HERE, "csrc"), numpy.get_include()]
    library_dirs, libraries, macros = [], [], [("NPY_NO_DEPRECATED_API", "NPY_1_20_API_VERSION")]
    for name in SYSTEM_LIBS:
        inc, libdirs, libs, defs = pkg_config(name)
        include_dirs += inc
        library_dirs += libdirs
        libraries += libs
        macros += defs
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
        macros.append(("PR_EMULATE_AVX512", "1"))
    # runtime search path so the OpenBLAS variant we compiled against is the one we load
    ldflags += [f"-Wl,-rpath,{d}" for d in library_dirs]
    depends = glob.glob(os.path.join("csrc", "**", "*.h"), recursive=True)
    return Extension(
        "parrot._core", sources=sources(), include_dirs=include_dirs, library_dirs=library_dirs,
        libraries=libraries, define_macros=macros, extra_compile_args=cflags, extra_link_args=ldflags,
        depends=depends)


setup(ext_modules=[make_extension()], cmdclass={"build_ext": BuildExt})
