"""Build the one extension, ``netmem._core``, from ``pyx/_core.pyx`` and its included parts.

``NETMEM_DEBUG=1`` builds with bounds checks and the pool invariant checks switched on
(``make debug``).
"""
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("NETMEM_DEBUG", "0") == "1"
MODE_FILE = os.path.join("pyx", ".build-mode")


def _mode_changed():
    """Regenerate the C when switching between debug and release (the .pyx did not change)."""
    mode = "debug" if DEBUG else "release"
    try:
        with open(MODE_FILE) as f:
            old = f.read().strip()
    except OSError:
        old = None
    with open(MODE_FILE, "w") as f:
        f.write(mode)
    return old != mode


ext = Extension(
    "netmem._core",
    ["pyx/_core.pyx"],
    include_dirs=[numpy.get_include(), "pyx/includes"],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
                   ("NETMEM_DEBUG", "1" if DEBUG else "0")],
    extra_compile_args=["-O0", "-g"] if DEBUG else ["-O3"],
)

setup(
    ext_modules=cythonize(
        [ext],
        include_path=[".", "pyx"],
        language_level=3,
        compiler_directives={
            "boundscheck": DEBUG,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": DEBUG,
            "embedsignature": True,
        },
        force=_mode_changed(),
    ),
)
