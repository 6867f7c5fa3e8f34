"""Build-log lines and what the job page's log must take each to mean (``None``: plain), for
the table of meanings in ``orchestrator/web/static/log.js``: checked from Python against the
table's own patterns (tests/unit/test_web.py) and in Chromium (tests/browser/test_colour.py)."""

from __future__ import annotations

LINE_MEANINGS: list[tuple[str, str | None]] = [
    # makepkg
    ("==> ERROR: A failure occurred in build().", "error"),
    ("==> WARNING: Skipping verification of source file PGP signatures.", "warning"),
    ("==> Making package: llama.cpp 1.0-1 (Mon Dec  7 00:00:00 2026)", "progress"),
    ("==> Starting build()...", "progress"),
    ("  -> Removing existing $pkgdir/ directory...", "progress"),
    ("    Aborting...", None),
    # rustc and cargo
    ("error[E0308]: mismatched types", "error"),
    ('error: could not compile `hello` (bin "hello") due to 1 previous error', "error"),
    ("warning: unused variable: `x`", "warning"),
    ('warning: `hello` (bin "hello") generated 1 warning', "warning"),
    ("   Compiling hello v0.1.0 (/build/src)", None),
    ("    Finished `release` profile [optimized] target(s) in 2.31s", None),
    ("  --> src/main.rs:2:18", None),
    ("  = note: expected type `u32`", None),
    # gcc and clang, the linker, make
    ("hello.c:3:5: error: expected ';' before 'return'", "error"),
    ("hello.c:1:10: fatal error: missing.h: No such file or directory", "error"),
    ("gcc: fatal error: no input files", "error"),
    ("collect2: error: ld returned 1 exit status", "error"),
    ("hello.c:4:9: warning: unused variable 'y' [-Wunused-variable]", "warning"),
    ("/usr/bin/ld: warning: creating DT_TEXTREL in a PIE", "warning"),
    ("hello.c:2:1: note: declared here", None),
    ("make: *** [Makefile:3: all] Error 1", "error"),
    ("make[2]: *** [CMakeFiles/llama.dir/build.make:76: llama.o] Error 1", "error"),
    ("cc -O2 -o hello hello.c", None),
    # CMake
    ("CMake Error at CMakeLists.txt:12 (find_package):", "error"),
    ("CMake Warning at CMakeLists.txt:40 (message):", "warning"),
    ("CMake Deprecation Warning at CMakeLists.txt:1 (cmake_minimum_required):", "warning"),
    ("-- Configuring done (0.4s)", None),
    ("[ 42%] Building CXX object src/CMakeFiles/llama.dir/llama.cpp.o", None),
    # words that merely mention an error are not one
    ("checking for error: no", None),
    ("test result: ok. 0 errors, 0 warnings", None),
    ("Compiling error.rs", None),
]
