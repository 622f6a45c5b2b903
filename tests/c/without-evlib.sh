#!/bin/sh
# Runs a test as on a machine without libwebsockets' libev event library (Debian:
# libwebsockets-evlib-ev), which lws 4.1 loads from a fixed directory at lws_create_context(): in a
# private user and mount namespace the library's file is /dev/null there, so loading it fails as it
# would if it were not installed. LIBSYNC_TEST_NO_EVLIB=1 tells the test.
#   without-evlib.sh LIBRARY_PATH COMMAND...
# Exits 77 (skipped) where the namespaces cannot be made (unshare missing or not permitted).
plugin=$1
shift
if [ ! -e "$plugin" ]; then
    LIBSYNC_TEST_NO_EVLIB=1 exec "$@"
fi
if ! unshare --user --map-root-user --mount true 2>/dev/null; then
    echo "skipped: unshare --user --mount is not available here"
    exit 77
fi
exec unshare --user --map-root-user --mount sh -c \
    'mount --bind /dev/null "$0" && LIBSYNC_TEST_NO_EVLIB=1 exec "$@"' "$plugin" "$@"
