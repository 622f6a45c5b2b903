#!/usr/bin/env bash
# Fails when the public headers, the version script and the dynamic symbols of libsync.so do not
# list exactly the same functions: a symbol added or removed must be added or removed everywhere.
set -euo pipefail
headers_dir=$1 map=$2 lib=$3
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$here/../../scripts/header-symbols.sh" "$headers_dir" >"$tmp/headers"
sed -n '/global:/,/local:/p' "$map" | grep -oE '^[[:space:]]+[A-Za-z_][A-Za-z0-9_]*;' |
  tr -d ' ;' | sort -u >"$tmp/map"
nm -D --defined-only "$lib" | awk '$2 ~ /^[TWiV]$/ {print $3}' | sed 's/@.*//' |
  grep -v '^LIBSYNC_' | sort -u >"$tmp/lib"
status=0
if ! diff -u "$tmp/headers" "$tmp/map" >"$tmp/d1"; then
  echo "headers (-) and libsync.map (+) differ:"; cat "$tmp/d1"; status=1
fi
if ! diff -u "$tmp/map" "$tmp/lib" >"$tmp/d2"; then
  echo "libsync.map (-) and the symbols libsync.so exports (+) differ:"; cat "$tmp/d2"; status=1
fi
soname=$(objdump -p "$lib" | awk '/SONAME/ {print $2}')
case "$soname" in
  libsync.so.[0-9]*) ;;
  *) echo "unexpected SONAME '$soname'"; status=1 ;;
esac
n=$(wc -l <"$tmp/headers")
if [ "$status" = 0 ]; then
  echo "ABI: $n functions, headers = version script = exports, SONAME $soname"
fi
exit $status
