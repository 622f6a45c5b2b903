'use strict';
// The package's install script: builds the addon with CMake + SWIG against the local Node headers
// (nothing is downloaded: no node-gyp, no header tarball). libsync is compiled from the sources
// the tarball carries (vendor/, put there by `npm pack`) or, for a package installed straight from
// a checkout, from the checkout around it, and linked in statically: the result,
// build/bindings/node/syncengine.node, which index.js loads, needs no libsync.so and holds no path
// into the tree it was built from.
const { execFileSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const pkg = path.resolve(__dirname, '..');
const vendor = path.join(pkg, 'vendor');
const root = fs.existsSync(vendor) ? vendor : path.resolve(pkg, '..', '..');
const build = path.join(pkg, 'build');
// The headers of the running node: <prefix>/include/node (/usr/include/node for /usr/bin/node),
// or npm's --nodedir.
const nodedir = process.env.npm_config_nodedir;
const include = nodedir
  ? path.join(nodedir, 'include', 'node')
  : path.resolve(path.dirname(process.execPath), '..', 'include', 'node');

if (!fs.existsSync(path.join(root, 'libsync', 'include', 'libsync', 'libsync.h'))) {
  console.error(
    `syncengine: no libsync sources in ${root}; install the tarball \`npm pack\` makes in ` +
      'bindings/node of a libsync checkout',
  );
  process.exit(1);
}
if (!fs.existsSync(path.join(include, 'node.h'))) {
  console.error(
    `syncengine: no node.h in ${include}; pass --nodedir=<prefix> (e.g. --nodedir=/usr)`,
  );
  process.exit(1);
}

// A build directory configured from another source tree (an older layout of this package) would
// make CMake refuse: start that one afresh.
const cache = path.join(build, 'CMakeCache.txt');
if (fs.existsSync(cache) && !fs.readFileSync(cache, 'utf8').includes(`CMAKE_HOME_DIRECTORY:INTERNAL=${pkg}\n`)) {
  fs.rmSync(build, { recursive: true, force: true });
}

const run = (cmd, args) => execFileSync(cmd, args, { stdio: 'inherit' });
run('cmake', [
  '-S',
  pkg,
  '-B',
  build,
  '-DCMAKE_BUILD_TYPE=Release',
  `-DLIBSYNC_ROOT=${root}`,
  // a newer compiler's new warning must not break a user's install
  '-DLIBSYNC_WERROR=OFF',
  `-DNODE_INCLUDE_DIR=${include}`,
]);
run('cmake', ['--build', build, '--target', 'syncengine_node', '-j', '2']);
