#!/bin/sh
# Install this globmed-edge bundle on a laptop with no network and no compiler (see README.txt).
#
#   sh install.sh [--key NGO.pub] [--venv DIR]
#
#   --key FILE   the public key your organisation gave you (by another way than this stick): the
#                bundle is refused unless its signature matches it. Needs openssl (3.0 or newer).
#   --venv DIR   where the program goes (default: $GLOBMED_EDGE_VENV, else ~/globmed-edge)
#
# Nothing from the bundle runs before its checksums (and signature, with --key) are checked; pip is
# given no index, only this bundle's wheels/. Running it again after an interruption is safe.
set -eu

PY_WANT=@@PYTHON@@
EXTRAS=@@EXTRAS@@
VERSION=@@VERSION@@
GLIBC_MIN=@@GLIBC@@
NEED_KIB=@@NEED_KIB@@

say() { printf 'install.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; say "nothing more was installed"; exit 1; }

KEY=
VENV=${GLOBMED_EDGE_VENV:-$HOME/globmed-edge}
while [ $# -gt 0 ]; do
  case "$1" in
    --key) [ $# -ge 2 ] || die "--key needs a file"; KEY=$2; shift 2 ;;
    --venv) [ $# -ge 2 ] || die "--venv needs a folder"; VENV=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see: sh install.sh --help)" ;;
  esac
done
case "$KEY" in ''|/*) ;; *) KEY=$(pwd)/$KEY ;; esac
case "$VENV" in /*) ;; *) VENV=$(pwd)/$VENV ;; esac
HERE=$(cd "$(dirname "$0")" && pwd)
cd "$HERE"

# 1. the signature, before anything else from the bundle is trusted
if [ -n "$KEY" ]; then
  [ -f "$KEY" ] || die "$KEY: no such public key file"
  [ -f SHA256SUMS.sig ] || die "SHA256SUMS.sig: missing; this bundle is not signed, but --key was given"
  command -v openssl >/dev/null 2>&1 || die "openssl is needed to check the signature (install it, or run without --key at your own risk)"
  openssl pkeyutl -verify -pubin -inkey "$KEY" -rawin -in SHA256SUMS -sigfile SHA256SUMS.sig >/dev/null 2>&1 \
    || die "SHA256SUMS: the signature does not match $KEY: the bundle was altered, or signed with another key"
  say "[1/6] signature matches $KEY"
elif [ -f SHA256SUMS.sig ]; then
  say "[1/6] the bundle is signed, but no --key was given: the signature was NOT checked"
else
  say "[1/6] the bundle is not signed"
fi

# 2. every file: nothing added, nothing missing, nothing changed, no links
command -v sha256sum >/dev/null 2>&1 || die "sha256sum (coreutils) is needed to check the bundle"
odd=$(find . -type l -print -o ! -type f ! -type d -print | head -n 1)
[ -z "$odd" ] || die "${odd#./}: a link or special file inside the bundle; refused"
listed=$(mktemp); present=$(mktemp)
trap 'rm -f "$listed" "$present"' EXIT INT TERM
cut -c67- SHA256SUMS | sort > "$listed"
find . -type f | sed 's|^\./||' | grep -v -x -e SHA256SUMS -e SHA256SUMS.sig | sort > "$present"
extra=$(comm -13 "$listed" "$present" | head -n 1)
[ -z "$extra" ] || die "$extra: not listed in SHA256SUMS; something was added to the bundle"
out=$(sha256sum -c --quiet --strict SHA256SUMS 2>&1) \
  || die "$(printf '%s\n' "$out" | head -n 1) (the file was altered or copied incompletely)"
rm -f "$listed" "$present"; trap - EXIT INT TERM
say "[2/6] $(wc -l < SHA256SUMS | tr -d ' ') files match SHA256SUMS"

# 3. this laptop: Python, glibc, CPU architecture, free disk
PY=
for p in "python$PY_WANT" python3; do
  if command -v "$p" >/dev/null 2>&1 && [ "$("$p" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$PY_WANT" ]; then
    PY=$(command -v "$p"); break
  fi
done
[ -n "$PY" ] || die "this bundle is for Python $PY_WANT; this laptop has $(python3 --version 2>&1 || echo 'no python3') (ask for a bundle made with --python X.Y)"
"$PY" - "$GLIBC_MIN" <<'EOF' || die "this laptop's system library (glibc) or CPU does not match the bundle (see above)"
import platform, sys
name, version = platform.libc_ver()
want = tuple(int(x) for x in sys.argv[1].split("."))
have = tuple(int(x) for x in version.split(".")[:2]) if name == "glibc" and version else (0, 0)
if platform.machine() not in ("x86_64", "AMD64"):
    sys.exit(f"install.sh: this laptop's CPU is {platform.machine()}; the bundle is for x86_64")
if have < want:
    sys.exit(f"install.sh: glibc {version or 'not found'} here, the bundle needs {sys.argv[1]} or newer")
EOF
mkdir -p "$(dirname "$VENV")"
free=$(df -Pk "$(dirname "$VENV")" | awk 'NR == 2 { print $4 }')
[ "$free" -ge "$NEED_KIB" ] || die "$(dirname "$VENV"): $((free / 1024)) MiB free, the install needs about $((NEED_KIB / 1024)) MiB"
say "[3/6] Python $PY_WANT, glibc >= $GLIBC_MIN, $((free / 1024)) MiB free"

# 4. the program, from the bundle's wheels only (no index: pip cannot reach any network)
PIP_WHEEL=$(ls wheels/pip-*.whl | head -n 1)
[ -n "$PIP_WHEEL" ] || die "wheels/: no pip wheel in the bundle"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv --without-pip "$VENV" || die "$VENV: could not create a Python environment there"
fi
"$VENV/bin/python" "$HERE/$PIP_WHEEL/pip" install --isolated --no-index --find-links "$HERE/wheels" \
  --only-binary=:all: --disable-pip-version-check --no-warn-script-location --quiet \
  pip "globmed-edge[$EXTRAS]==$VERSION" || die "installing from wheels/ failed (see pip's message above)"
say "[4/6] globmed-edge $VERSION installed in $VENV"

# 5-6. the builds into the data folder (checked again), then doctor and a one-word answer per build
if [ -n "$KEY" ]; then
  exec "$VENV/bin/globmed-edge" bundle install "$HERE" --no-packages --key "$KEY" --venv "$VENV"
fi
exec "$VENV/bin/globmed-edge" bundle install "$HERE" --no-packages --venv "$VENV"
