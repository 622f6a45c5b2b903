#!/usr/bin/env bash
# Installs everything libsync needs to build, run its demo and run every test suite, on a fresh
# Debian 12 machine (as root, or with sudo). Safe to run again: it installs only what is missing.
#   scripts/install-deps.sh            build + demo + all tests
#   scripts/install-deps.sh --minimal  build + demo only
set -euo pipefail
cd "$(dirname "$0")/.."

minimal=0
[ "${1:-}" = "--minimal" ] && minimal=1

sudo_cmd=""
if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi

apt_packages=(build-essential cmake pkg-config libwebsockets-dev libwebsockets-evlib-ev libev-dev libcjson-dev libsqlite3-dev
  libssl-dev openssl libhiredis-dev)
if [ "$minimal" = 0 ]; then
  apt_packages+=(swig clang clang-format libclang-rt-14-dev valgrind chromium sqlite3 procps
    python3-dev python3-venv nodejs npm libnode-dev redis-server)
fi

missing=()
for pkg in "${apt_packages[@]}"; do
  # nodejs/npm may come from elsewhere (the machine's own Node 20); count them present when on PATH.
  case "$pkg" in
    nodejs) command -v node >/dev/null && continue ;;
    npm) command -v npm >/dev/null && continue ;;
    # The Node addon compiles against /usr/include/node (Debian: libnode-dev; NodeSource: nodejs).
    libnode-dev) [ -f /usr/include/node/node.h ] && continue ;;
    python3-dev) python3 -c 'import sysconfig,os,sys; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"],"Python.h")) else 1)' 2>/dev/null && continue ;;
    python3-venv) python3 -c 'import venv' 2>/dev/null && continue ;;
  esac
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: apt packages: ${missing[*]}"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[ "$minimal" = 1 ] && exit 0

# Python test and example packages.
# Debian's own python3 refuses pip installs into the system (PEP 668): there we say we mean it.
pip_install() { python3 -m pip install -q --disable-pip-version-check "$@"; }
if ! pip_install -r tests/requirements.txt 2>/tmp/libsync-pip.err; then
  if grep -q externally-managed /tmp/libsync-pip.err; then
    pip_install --break-system-packages -r tests/requirements.txt
  else
    cat /tmp/libsync-pip.err >&2
    exit 1
  fi
fi

# Node packages of each JavaScript suite (locked versions).
for dir in tests/e2e tests/node bindings/node examples/node clients/js; do
  if [ -f "$dir/package.json" ]; then
    if [ -f "$dir/package-lock.json" ]; then
      (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error --ignore-scripts)
    else
      (cd "$dir" && npm install --no-audit --no-fund --loglevel=error --ignore-scripts)
    fi
  fi
done

# The Autobahn TestSuite (tests/autobahn) runs on Python 2.7 (pyenv's 2.7.18), from its own
# folder, installed once. Its zope.interface needs the zope namespace package declared.
autobahn_dir=${LIBSYNC_AUTOBAHN_DIR:-$HOME/.cache/libsync-autobahn}
if [ ! -f "$autobahn_dir/site/autobahntestsuite/__init__.py" ] ||
  [ ! -f "$autobahn_dir/site/zope/__init__.py" ]; then
  py27=${LIBSYNC_AUTOBAHN_PYTHON:-}
  if [ -z "$py27" ]; then
    pyenv_root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
    py27=$pyenv_root/versions/2.7.18/bin/python
  fi
  if [ ! -x "$py27" ]; then
    echo "install-deps: no Python 2.7.18 for the Autobahn TestSuite (pyenv install 2.7.18, or set LIBSYNC_AUTOBAHN_PYTHON)" >&2
    exit 1
  fi
  echo "install-deps: the Autobahn TestSuite into $autobahn_dir"
  mkdir -p "$autobahn_dir"
  "$py27" -m pip install -q --disable-pip-version-check --no-warn-script-location \
    --target "$autobahn_dir/site" autobahntestsuite==25.10.1 2>&1 | grep -v DEPRECATION >&2 || true
  echo "__import__('pkg_resources').declare_namespace(__name__)" >"$autobahn_dir/site/zope/__init__.py"
  [ -f "$autobahn_dir/site/autobahntestsuite/__init__.py" ] || {
    echo "install-deps: installing autobahntestsuite failed" >&2
    exit 1
  }
fi
