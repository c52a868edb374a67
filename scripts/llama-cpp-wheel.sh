#!/bin/sh
# Build (once) and print the path of the portable llama-cpp-python wheel this project installs.
#
#   scripts/llama-cpp-wheel.sh [PYTHON]       # PYTHON: the interpreter to build for (default python3)
#
# Portable means it runs on any x86-64 CPU and still uses the best kernels the CPU has: llama.cpp is
# compiled with GGML_NATIVE=OFF and one CPU backend library per instruction-set level
# (GGML_BACKEND_DL=ON, GGML_CPU_ALL_VARIANTS=ON: x64, sse42, sandybridge, haswell, skylakex, icelake,
# zen4, sapphirerapids, ...); globmed_edge.backends.llamacpp_runtime loads the best one at run time.
# A default `pip install llama-cpp-python` compiles for the installing CPU (-march=native) and dies
# with SIGILL on an older one (docs/backends.md, "Portable runtime").
#
# pip's wheel cache does not key on CMAKE_ARGS, so a native wheel built earlier would be reused
# silently. This script never uses pip's cache: it builds with --no-cache-dir into a folder of its
# own whose name is a hash of everything that changes the binary (version, flags, Python, machine,
# compiler), and reuses that wheel only when the hash matches. Cold build: ~11 min on 2 cores.
# Progress goes to stderr; stdout is only the wheel's path.
set -eu

PYTHON=${1:-python3}
VERSION=0.3.36
FLAGS="-DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON -DCMAKE_INSTALL_BINDIR=llama_cpp/lib -DCMAKE_INSTALL_LIBDIR=llama_cpp/lib -DCMAKE_INSTALL_INCLUDEDIR=llama_cpp/include -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF"
case "$(uname -m)" in
  x86_64|amd64) ;;
  *) # the CPU variants above are x86-64's; elsewhere llama.cpp's baseline flags with run-time loading
     FLAGS="-DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DCMAKE_INSTALL_BINDIR=llama_cpp/lib -DCMAKE_INSTALL_LIBDIR=llama_cpp/lib -DCMAKE_INSTALL_INCLUDEDIR=llama_cpp/include -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF" ;;
esac
PYTAG=$("$PYTHON" -c 'import sys, sysconfig; print(sys.implementation.cache_tag, sysconfig.get_platform())')
CC_VERSION=$( (${CC:-cc} --version 2>/dev/null || echo none) | head -n 1)
KEY=$(printf '%s\n' "$VERSION" "$FLAGS" "$PYTAG" "$CC_VERSION" | sha256sum | cut -c1-16)
CACHE=${GLOBMED_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/globmed-edge/wheels}
DIR="$CACHE/llama-cpp-python-$VERSION-portable-$KEY"

for wheel in "$DIR"/llama_cpp_python-"$VERSION"-*.whl; do
  if [ -f "$wheel" ]; then
    echo "portable llama-cpp-python $VERSION: cached wheel $wheel" >&2
    echo "$wheel"
    exit 0
  fi
done

echo "building the portable llama-cpp-python $VERSION wheel (GGML_NATIVE=OFF, every CPU variant; ~11 min on 2 cores, once per machine)" >&2
mkdir -p "$CACHE"
TMP=$(mktemp -d "$CACHE/.build-XXXXXX")
trap 'rm -rf "$TMP"' EXIT INT TERM
start=$(date +%s)
CMAKE_ARGS="$FLAGS" CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)} \
  "$PYTHON" -m pip wheel --no-cache-dir --no-deps --no-binary llama-cpp-python \
  "llama-cpp-python==$VERSION" -w "$TMP/wheel" >"$TMP/build.log" 2>&1 || {
    echo "error: building llama-cpp-python $VERSION failed (needs a C/C++ compiler and CMake); last lines of the log:" >&2
    tail -n 20 "$TMP/build.log" >&2
    exit 1
  }
wheel=$(ls "$TMP"/wheel/llama_cpp_python-"$VERSION"-*.whl)
"$PYTHON" - "$wheel" <<'EOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
if not any("/libggml-cpu-" in n for n in names) and not any(n.endswith("libggml-cpu.so") for n in names):
    sys.exit(f"error: {sys.argv[1]} has no CPU backend library (libggml-cpu*); the build did not produce a usable runtime")
EOF
rm -rf "$DIR"
mv "$TMP/wheel" "$DIR"
echo "portable llama-cpp-python $VERSION built in $(( $(date +%s) - start )) s: $DIR" >&2
ls "$DIR"/llama_cpp_python-"$VERSION"-*.whl
