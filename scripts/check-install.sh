#!/usr/bin/env bash
# Installs a libsync build into a temporary prefix and uses it the way a user would: checks the
# installed files (headers, libsync.so -> libsync.so.0 -> libsync.so.X.Y.Z, SONAME, pkg-config and
# CMake package files), then builds examples/c/standalone/ outside the tree with pkg-config alone
# and with CMake's find_package(libsync), and runs both programs; last, runs README.md's block for
# a prefix of one's own as it is written (install, pkg-config, rpath) and the program it builds,
# with no LD_LIBRARY_PATH.
#   scripts/check-install.sh BUILD_DIR
set -euo pipefail

build=${1:?usage: check-install.sh BUILD_DIR}
src=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "$build" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/libsync-install.XXXXXX")
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix

fail() { echo "check-install: FAIL: $*" >&2; exit 1; }
step() { echo "check-install: $*"; }

step "cmake --install $build --prefix $prefix"
cmake --install "$build" --prefix "$prefix" >"$work/install.log" || { cat "$work/install.log"; fail "install failed"; }

# The library directory is lib/ (or lib64/, lib/<multiarch>/): find it through the .pc file.
pc=$(find "$prefix" -name libsync.pc -path '*/pkgconfig/*' | head -n1)
[ -n "$pc" ] || fail "no libsync.pc installed"
libdir=$(dirname "$(dirname "$pc")")

step "installed files in $libdir and $prefix/include"
for header in "$src"/libsync/include/libsync/*.h; do
  [ -f "$prefix/include/libsync/$(basename "$header")" ] || fail "header $(basename "$header") not in include/libsync/"
done
real=$(find "$libdir" -maxdepth 1 -type f -name 'libsync.so.*.*.*' | head -n1)
[ -n "$real" ] || fail "no libsync.so.X.Y.Z in $libdir"
[ -L "$libdir/libsync.so.0" ] && [ "$(readlink "$libdir/libsync.so.0")" = "$(basename "$real")" ] ||
  fail "libsync.so.0 is not a symlink to $(basename "$real")"
[ -L "$libdir/libsync.so" ] && [ "$(readlink -f "$libdir/libsync.so")" = "$(readlink -f "$real")" ] ||
  fail "libsync.so is not a symlink to the library"
soname=$(readelf -d "$real" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
[ "$soname" = libsync.so.0 ] || fail "SONAME is '$soname', not libsync.so.0"
[ -f "$libdir/cmake/libsync/libsync-config.cmake" ] || fail "no CMake package file"
[ -f "$libdir/cmake/libsync/libsync-config-version.cmake" ] || fail "no CMake version file"
# bin/libsync-loadgen is installed exactly when the bench is built (README.md says so).
if [ -x "$build/bench/libsync-loadgen" ]; then
  [ -x "$prefix/bin/libsync-loadgen" ] || fail "the bench is built but bin/libsync-loadgen is not installed"
else
  [ ! -e "$prefix/bin/libsync-loadgen" ] || fail "bin/libsync-loadgen installed without the bench"
fi
# Nothing private leaks into the installed tree.
extra=$(find "$prefix/include" -type f ! -path '*/include/libsync/*.h')
[ -z "$extra" ] || fail "unexpected files under include/: $extra"

step "pkg-config: $(PKG_CONFIG_PATH=$libdir/pkgconfig pkg-config --cflags --libs libsync)"
cp -r "$src/examples/c/standalone" "$work/pc"
PKG_CONFIG_PATH=$libdir/pkgconfig make -s -C "$work/pc" >"$work/make.log" 2>&1 ||
  { cat "$work/make.log"; fail "the pkg-config build failed"; }
# The Makefile puts libdir in the rpath: it runs as built, with no LD_LIBRARY_PATH.
env -u LD_LIBRARY_PATH "$work/pc/standalone" || fail "the pkg-config build does not run"
# It must really have loaded the installed copy, not one from elsewhere.
# (ldd's output is captured first: `ldd | grep -q` fails under pipefail when grep exits early.)
loaded=$(env -u LD_LIBRARY_PATH ldd "$work/pc/standalone")
grep -q "libsync.so.0 => $libdir/" <<<"$loaded" ||
  fail "the pkg-config build did not load $libdir/libsync.so.0"

step "CMake find_package(libsync)"
cp -r "$src/examples/c/standalone" "$work/cm"
rm -f "$work/cm/standalone"
{ cmake -S "$work/cm" -B "$work/cm/build" -DCMAKE_PREFIX_PATH="$prefix" &&
  cmake --build "$work/cm/build"; } >"$work/cmake.log" 2>&1 ||
  { cat "$work/cmake.log"; fail "the find_package build failed"; }
# CMake puts the library's directory in the build tree's RPATH: no LD_LIBRARY_PATH needed.
"$work/cm/build/standalone" || fail "the find_package build does not run"
loaded=$(ldd "$work/cm/build/standalone")
grep -q "libsync.so.0 => $libdir/" <<<"$loaded" ||
  fail "the find_package build did not load $libdir/libsync.so.0"

step "README.md's build in a prefix of one's own: pkg-config and rpath, no LD_LIBRARY_PATH"
# The fenced block after the marker comment, verbatim. It is run in a directory holding app.c (the
# standalone example) and `build` (this build), with HOME there too, so its prefix is
# $work/readme/.local/libsync.
block=$(awk '/<!-- scripts\/check-install.sh runs the next block/ { armed = 1; next }
             armed && /^```/ { if (inside) exit; inside = 1; next }
             inside { print }' "$src/README.md")
[ -n "$block" ] || fail "README.md has no block marked for scripts/check-install.sh"
mkdir -p "$work/readme"
cp "$src/examples/c/standalone/main.c" "$work/readme/app.c"
ln -s "$build" "$work/readme/build"
(cd "$work/readme" && env -u LD_LIBRARY_PATH -u PKG_CONFIG_PATH HOME="$work/readme" \
  bash -euo pipefail -c "$block") >"$work/readme.log" 2>&1 ||
  { cat "$work/readme.log"; fail "README.md's block failed (above: its output)"; }
own=$work/readme/.local/libsync
loaded=$(env -u LD_LIBRARY_PATH ldd "$work/readme/app")
grep -q "libsync.so.0 => $own/" <<<"$loaded" ||
  fail "README.md's program did not load libsync.so.0 from $own: $loaded"

step "ok"
