#!/usr/bin/env bash
# Prints, sorted, every function the public headers declare with SYNC_EXTERN: the ABI as written.
set -euo pipefail
dir=${1:-$(dirname "$0")/../libsync/include/libsync}
grep -hv "^#" "$dir"/*.h | tr '\n' ' ' | grep -oE 'SYNC_EXTERN [^;(#]*\(' |
  sed -E 's/.*[ *]([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*\($/\1/' | sort -u
