'use strict';
// `npm pack` / `npm publish` of this package (prepack and postpack): the tarball carries the
// libsync sources it builds from, in vendor/, so an installed package depends on no checkout.
//   node scripts/pack.js vendor   copy the sources in (prepack)
//   node scripts/pack.js clean    remove them again (postpack)
const fs = require('fs');
const path = require('path');

const pkg = path.resolve(__dirname, '..');
const root = path.resolve(pkg, '..', '..');
const vendor = path.join(pkg, 'vendor');

// What a libsync build with only the Node addon reads, relative to the repository root.
const SOURCES = [
  'CMakeLists.txt',
  'cmake',
  'libsync/CMakeLists.txt',
  'libsync/libsync.map',
  'libsync/libsync.pc.in',
  'libsync/include',
  'libsync/src',
  'bindings/CMakeLists.txt',
  'bindings/syncengine.i',
  'bindings/common.i',
  'bindings/node/syncengine_node.i',
  'bindings/node/syncengine_node_rooms.i',
];

function clean() {
  fs.rmSync(vendor, { recursive: true, force: true });
}

function copyIn() {
  if (!fs.existsSync(path.join(root, 'libsync', 'include', 'libsync', 'libsync.h'))) {
    console.error(`syncengine: ${root} is not a libsync source tree; pack from bindings/node of one`);
    process.exit(1);
  }
  clean();
  for (const rel of SOURCES) {
    const from = path.join(root, rel);
    if (!fs.existsSync(from)) {
      console.error(`syncengine: ${from} is missing`);
      process.exit(1);
    }
    fs.cpSync(from, path.join(vendor, rel), { recursive: true });
  }
}

const mode = process.argv[2];
if (mode === 'vendor') copyIn();
else if (mode === 'clean') clean();
else {
  console.error('usage: node scripts/pack.js vendor|clean');
  process.exit(2);
}
