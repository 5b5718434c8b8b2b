"""Build the Cython core, or skip it.

KITEX_FAST_NO_EXTENSIONS=1 (or a non-CPython interpreter) installs the pure-Python twin only.
A failed compile falls back to a pure install with a loud warning, except under cibuildwheel
(CIBUILDWHEEL=1), where a wheel must never ship without its extension: there, missing
libnghttp2 (the compiled component server's library) fails the build too, and the modules are
built without debug info (release wheels; docs/install.md).

The version has one home, ``__version__`` in src/kitex_fast/__init__.py (pyproject.toml reads it).
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# On only for 1/true/yes, as kitex_fast._dispatch.env_flag reads it at import time.
NO_EXTENSIONS = os.environ.get("KITEX_FAST_NO_EXTENSIONS", "").strip().lower() in ("1", "true", "yes") or (
    sys.implementation.name != "cpython"
)
IN_CIBUILDWHEEL = os.environ.get("CIBUILDWHEEL") == "1"

# Cython directives live here and nowhere else.
COMPILER_DIRECTIVES = {
    "language_level": 3,
    "embedsignature": True,
    "freethreading_compatible": True,
}

MODULES = ["_codec", "_transport", "aio/_protocol"]  # paths under src/kitex_fast, no suffix
# The compiled component server links libnghttp2; built only where its headers are found. Its
# rooms are built together or not at all: the HTTP/2 connection (the one that links libnghttp2),
# the compiled Invoke path and the protobuf codec, which the connection imports.
H2SERVER = "dapr/_h2server"
H2SERVER_MODULES = ["dapr/_protobuf", "dapr/_invoke", H2SERVER]
BUILD_FAILED_NOTE = "_build_failed.txt"


class OptionalBuildExt(build_ext):
    """build_ext that turns a compile failure into a pure install, outside cibuildwheel."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any toolchain failure
            self._fallback(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._fallback(exc)

    def _fallback(self, exc: Exception) -> None:
        if IN_CIBUILDWHEEL:
            raise exc
        banner = "*" * 75
        reason = "%s: %s" % (type(exc).__name__, exc)
        sys.stderr.write(
            "\n%s\nWARNING: kitex_fast could not compile its Cython core (%s).\n"
            "Installing the pure-Python twin instead: it works, with about 1.4x the latency per call.\n%s\n\n"
            % (banner, reason, banner)
        )
        # pip shows build output only with -v: leave a note that the package reads at import
        # time (kitex_fast/_dispatch.py) to warn where the user will see it.
        note = os.path.join(self.build_lib, "kitex_fast", BUILD_FAILED_NOTE)
        os.makedirs(os.path.dirname(note), exist_ok=True)
        with open(note, "w", encoding="utf-8") as f:
            f.write(reason[:2000] + "\n")


def find_nghttp2():
    """Compiler/linker arguments for libnghttp2, or None when its headers are not here."""
    import shutil
    import subprocess

    if shutil.which("pkg-config"):
        try:
            cflags = subprocess.run(["pkg-config", "--cflags-only-I", "libnghttp2"], capture_output=True,
                                    text=True, check=True).stdout.split()
            libs = subprocess.run(["pkg-config", "--libs", "libnghttp2"], capture_output=True,
                                  text=True, check=True).stdout.split()
        except (OSError, subprocess.CalledProcessError):
            pass
        else:
            return {
                "include_dirs": [f[2:] for f in cflags if f.startswith("-I")],
                "library_dirs": [f[2:] for f in libs if f.startswith("-L")],
                "libraries": [f[2:] for f in libs if f.startswith("-l")] or ["nghttp2"],
            }
    for prefix in ("/usr", "/usr/local", "/opt/homebrew"):
        if os.path.exists(os.path.join(prefix, "include", "nghttp2", "nghttp2.h")):
            return {"include_dirs": [os.path.join(prefix, "include")],
                    "library_dirs": [os.path.join(prefix, "lib")], "libraries": ["nghttp2"]}
    return None


NGHTTP2_MISSING = (
    "libnghttp2's headers were not found (pkg-config libnghttp2, or nghttp2/nghttp2.h under /usr, "
    "/usr/local, /opt/homebrew)"
)


def release_flags():
    """Compiler and linker flags of release wheels: no debug info (CIBUILDWHEEL=1 only)."""
    if not IN_CIBUILDWHEEL or sys.platform == "win32":
        return {}
    link = ["-Wl,-S"] if sys.platform == "darwin" else ["-Wl,--strip-debug"]
    return {"extra_compile_args": ["-g0"], "extra_link_args": link}


def extensions():
    if NO_EXTENSIONS:
        return []
    # (before Cython: this is the release build's most likely failure, and it names the fix)
    nghttp2 = find_nghttp2()
    if nghttp2 is None and IN_CIBUILDWHEEL:
        raise SystemExit(
            "ERROR: %s. CIBUILDWHEEL=1: a release wheel must carry the compiled component server "
            "(kitex_fast.dapr._h2server), so libnghttp2 is required: install it in cibuildwheel's "
            "before-all (pyproject.toml [tool.cibuildwheel])." % NGHTTP2_MISSING
        )
    try:
        from Cython.Build import cythonize
    except ImportError as exc:
        if IN_CIBUILDWHEEL:
            raise
        sys.stderr.write("WARNING: Cython is not available (%s); pure-Python install.\n" % exc)
        return []
    flags = release_flags()
    exts = [
        Extension("kitex_fast." + name.replace("/", "."), ["src/kitex_fast/%s.pyx" % name], **flags)
        for name in MODULES
    ]
    if nghttp2 is None:
        sys.stderr.write(
            "NOTE: %s: kitex_fast.dapr._h2server (with _protobuf and _invoke) is not built, and "
            "`kitex-fast component` will serve with "
            "grpcio. Install libnghttp2-dev (Debian) or libnghttp2-devel and reinstall for the "
            "compiled server.\n" % NGHTTP2_MISSING
        )
    else:
        for name in H2SERVER_MODULES:  # (only _h2server calls libnghttp2; the others need no library)
            libs = nghttp2 if name == H2SERVER else {}
            exts.append(Extension("kitex_fast." + name.replace("/", "."),
                                  ["src/kitex_fast/%s.pyx" % name], **libs, **flags))
    try:
        return cythonize(
            exts,
            compiler_directives=COMPILER_DIRECTIVES,
            include_path=["src"],
        )
    except Exception as exc:  # noqa: BLE001 - Cython syntax/compile errors
        if IN_CIBUILDWHEEL:
            raise
        sys.stderr.write("WARNING: cythonize failed (%s); pure-Python install.\n" % exc)
        return []


if __name__ == "__main__":  # (setuptools' build backend runs this file as __main__)
    setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
