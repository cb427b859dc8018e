"""Builds the compiled codec; AMQPFAST_NO_EXTENSIONS=1 builds without it."""

import os
import platform

from setuptools import Extension, setup

NO_EXTENSIONS = (
    os.environ.get("AMQPFAST_NO_EXTENSIONS", "") not in ("", "0")
    or platform.python_implementation() != "CPython"
)


def extensions() -> list[Extension]:
    if NO_EXTENSIONS:
        return []
    from Cython.Build import cythonize

    # -g0: no debug info, which would make the module ten times larger
    compile_args = [] if os.name == "nt" else ["-O3", "-g0"]
    codec = Extension("amqpfast._codec", ["amqpfast/_codec.pyx"], extra_compile_args=compile_args)
    return cythonize(
        [codec],
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "embedsignature": True,
        },
    )


setup(ext_modules=extensions())
