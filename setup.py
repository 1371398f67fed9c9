"""Builds the Cython extensions; everything else is declared in pyproject.toml."""

from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "filtercore._table",
        ["filtercore/_table.pyx"],
        extra_compile_args=["-O3"],
    ),
    Extension(
        "filtercore._digest",
        ["filtercore/_digest.pyx"],
        extra_compile_args=["-O3"],
    ),
    Extension(
        "dns_resolver._ratelimit",
        ["dns_resolver/_ratelimit.pyx"],
        include_dirs=["filtercore"],  # _siphash.h
        extra_compile_args=["-O3"],
    ),
    Extension(
        "dns_resolver._subtable",
        ["dns_resolver/_subtable.pyx"],
        extra_compile_args=["-O3"],
    ),
    Extension(
        "dns_resolver._cache",
        ["dns_resolver/_cache.pyx"],
        include_dirs=["filtercore"],  # _siphash.h
        extra_compile_args=["-O3"],
    ),
    Extension(
        "dns_resolver._blocks",
        ["dns_resolver/_blocks.pyx"],
        extra_compile_args=["-O3"],
    ),
    Extension(
        "dns_resolver._querylog",
        ["dns_resolver/_querylog.pyx"],
        include_dirs=["filtercore"],  # _siphash.h
        extra_compile_args=["-O3"],
    ),
    Extension(
        "dns_resolver._tapbuf",
        ["dns_resolver/_tapbuf.pyx"],
        include_dirs=["filtercore", "dns_resolver"],  # _siphash.h, _dnstap.h
        extra_compile_args=["-O3"],
    ),
    Extension(
        "dns_resolver._observed",
        ["dns_resolver/_observed.pyx"],
        include_dirs=["filtercore"],  # _siphash.h
        extra_compile_args=["-O3"],
    ),
    Extension(
        "dns_resolver._fastpath",
        ["dns_resolver/_fastpath.pyx"],
        include_dirs=["filtercore", "dns_resolver"],  # _siphash.h, _subtable.h
        extra_compile_args=["-O3"],
    ),
    Extension(
        "dns_resolver._tls",
        ["dns_resolver/_tls.pyx"],
        libraries=["ssl", "crypto"],
        extra_compile_args=["-O3"],
    ),
    Extension(
        "dns_resolver._stream",
        ["dns_resolver/_stream.pyx"],
        include_dirs=["filtercore", "dns_resolver"],  # through the .pxd files it cimports
        libraries=["ssl", "crypto"],  # DoT (_tls.pxd)
        extra_compile_args=["-O3"],
    ),
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )
)
