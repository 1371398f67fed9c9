"""Builds the Cython extensions; everything else is declared in pyproject.toml."""

import sysconfig
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

# DoT and plain TCP in C (`_tls`, and `_stream` which cimports it) link OpenSSL. Without its
# headers (Debian: libssl-dev) they are left out, and asyncio serves TCP and DoT instead.
OPENSSL = any(
    (Path(d) / "openssl" / "ssl.h").is_file()
    for d in ("/usr/include", "/usr/local/include", sysconfig.get_paths()["include"])
)
WITH_OPENSSL = {"dns_resolver.fast._tls", "dns_resolver.fast._stream", "dns_resolver.fast._doh"}
# DoH in C (`_doh`, on the stream loop) frames HTTP/2 with libnghttp2. Without its headers
# (Debian: libnghttp2-dev) it is left out, and asyncio serves DoH instead.
NGHTTP2 = any(
    (Path(d) / "nghttp2" / "nghttp2.h").is_file()
    for d in ("/usr/include", "/usr/local/include", sysconfig.get_paths()["include"])
)

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
        "dns_resolver.fast._ratelimit",
        ["dns_resolver/fast/_ratelimit.pyx"],
        include_dirs=["filtercore"],  # _siphash.h
        extra_compile_args=["-O3"],
    ),
    Extension(
        "dns_resolver.fast._subtable",
        ["dns_resolver/fast/_subtable.pyx"],
        extra_compile_args=["-O3"],
    ),
    Extension(
        "dns_resolver.fast._cache",
        ["dns_resolver/fast/_cache.pyx"],
        include_dirs=["filtercore"],  # _siphash.h
        extra_compile_args=["-O3"],
    ),
    Extension(
        "dns_resolver.fast._blocks",
        ["dns_resolver/fast/_blocks.pyx"],
        extra_compile_args=["-O3"],
    ),
    Extension(
        "dns_resolver.fast._querylog",
        ["dns_resolver/fast/_querylog.pyx"],
        include_dirs=["filtercore"],  # _siphash.h
        extra_compile_args=["-O3"],
    ),
    Extension(
        "dns_resolver.fast._tapbuf",
        ["dns_resolver/fast/_tapbuf.pyx"],
        include_dirs=["filtercore", "dns_resolver/fast"],  # _siphash.h, _dnstap.h
        extra_compile_args=["-O3"],
    ),
    Extension(
        "dns_resolver.fast._observed",
        ["dns_resolver/fast/_observed.pyx"],
        include_dirs=["filtercore"],  # _siphash.h
        extra_compile_args=["-O3"],
    ),
    Extension(
        "dns_resolver.fast._clientids",
        ["dns_resolver/fast/_clientids.pyx"],
        include_dirs=["filtercore"],  # _siphash.h
        extra_compile_args=["-O3"],
    ),
    Extension(
        "dns_resolver.fast._fastpath",
        ["dns_resolver/fast/_fastpath.pyx"],
        include_dirs=["filtercore", "dns_resolver/fast"],  # _siphash.h, _subtable.h
        extra_compile_args=["-O3"],
    ),
    Extension(
        "dns_resolver.fast._tls",
        ["dns_resolver/fast/_tls.pyx"],
        libraries=["ssl", "crypto"],
        extra_compile_args=["-O3"],
    ),
    Extension(
        "dns_resolver.fast._stream",
        ["dns_resolver/fast/_stream.pyx"],
        include_dirs=["filtercore", "dns_resolver/fast"],  # through the .pxd files it cimports
        libraries=["ssl", "crypto"],  # DoT (_tls.pxd)
        extra_compile_args=["-O3"],
    ),
    Extension(
        "dns_resolver.fast._doh",
        ["dns_resolver/fast/_doh.pyx"],
        include_dirs=["filtercore", "dns_resolver/fast"],  # through the .pxd files it cimports
        libraries=["nghttp2", "ssl", "crypto"],
        extra_compile_args=["-O3"],
    ),
]

if not OPENSSL:
    print("setup.py: no OpenSSL headers (libssl-dev): TCP and DoT are served from asyncio")
    extensions = [e for e in extensions if e.name not in WITH_OPENSSL]
if not NGHTTP2:
    print("setup.py: no nghttp2 headers (libnghttp2-dev): DoH is served from asyncio")
    extensions = [e for e in extensions if e.name != "dns_resolver.fast._doh"]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )
)
