'use strict';
// `npm install` of this package: builds the addon with CMake + SWIG from the libsync source tree
// this directory lives in, against the local Node headers (nothing is downloaded). The result is
// build/bindings/node/syncengine.node, which index.js loads.
const { execFileSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const pkg = path.resolve(__dirname, '..');
const root = path.resolve(pkg, '..', '..');
const build = path.join(pkg, 'build');
// The headers of the running node: <prefix>/include/node (/usr/include/node for /usr/bin/node),
// or npm's --nodedir.
const nodedir = process.env.npm_config_nodedir;
const include = nodedir
  ? path.join(nodedir, 'include', 'node')
  : path.resolve(path.dirname(process.execPath), '..', 'include', 'node');

if (!fs.existsSync(path.join(root, 'libsync', 'include', 'libsync', 'libsync.h'))) {
  console.error(
    `syncengine: ${root} is not a libsync source tree; install from bindings/node of one`,
  );
  process.exit(1);
}
if (!fs.existsSync(path.join(include, 'node.h'))) {
  console.error(
    `syncengine: no node.h in ${include}; pass --nodedir=<prefix> (e.g. --nodedir=/usr)`,
  );
  process.exit(1);
}

const run = (cmd, args) => execFileSync(cmd, args, { stdio: 'inherit' });
run('cmake', [
  '-S',
  root,
  '-B',
  build,
  '-DCMAKE_BUILD_TYPE=Release',
  '-DBUILD_TESTING=OFF',
  '-DLIBSYNC_BUILD_PYTHON=OFF',
  '-DLIBSYNC_BUILD_EXAMPLES=OFF',
  '-DLIBSYNC_BUILD_BENCH=OFF',
  '-DLIBSYNC_BUILD_NODE=ON',
  `-DNODE_INCLUDE_DIR=${include}`,
]);
run('cmake', ['--build', build, '--target', 'syncengine_node', '-j', '2']);
