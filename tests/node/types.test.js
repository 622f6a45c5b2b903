'use strict';
// index.d.ts checked by the TypeScript compiler: a file using the whole API compiles under
// --strict, and misuse is rejected with the expected errors.
const test = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const tsc = path.join(__dirname, 'node_modules', 'typescript', 'bin', 'tsc');
const project = path.join(__dirname, 'types');

function compile(args) {
  return spawnSync(process.execPath, [tsc, ...args], {
    cwd: project,
    encoding: 'utf8',
    timeout: 120000,
  });
}

test('tsc --noEmit accepts the whole API used as documented', () => {
  const r = compile(['--noEmit', '-p', 'tsconfig.json']);
  assert.equal(r.status, 0, r.stdout + r.stderr);
});

test('tsc rejects misuse: wrong state shape, wrong option type, wrong return type, unknown persistMode, a room state or room store of the wrong shape, a cluster option of the wrong type', (t) => {
  // A tsconfig beside the misuse file, removed afterwards.
  const config = path.join(project, 'tsconfig.misuse.json');
  const base = JSON.parse(fs.readFileSync(path.join(project, 'tsconfig.json'), 'utf8'));
  // index.d.ts itself was checked by the test above; skip declaration files here (faster).
  const compilerOptions = { ...base.compilerOptions, skipLibCheck: true };
  fs.writeFileSync(config, JSON.stringify({ ...base, compilerOptions, files: ['misuse.ts'] }));
  t.after(() => fs.rmSync(config, { force: true }));
  const r = compile(['--noEmit', '-p', 'tsconfig.misuse.json']);
  assert.notEqual(r.status, 0);
  const errors = r.stdout.split('\n').filter((line) => line.includes('error TS'));
  assert.equal(errors.length, 7, r.stdout);
  assert.match(errors[0], /misuse\.ts\(8,.*'count' does not exist/);
  assert.match(errors[1], /misuse\.ts\(9,.*'string' is not assignable to type 'number'/);
  assert.match(errors[2], /misuse\.ts\(10,.*toUpperCase/);
  assert.match(errors[3], /misuse\.ts\(11,.*'"sometimes"' is not assignable/);
  assert.match(errors[4], /misuse\.ts\(12,.*'count' does not exist/);
  assert.match(errors[5], /misuse\.ts\(13,.*RoomStore<State>/);
  assert.match(errors[6], /misuse\.ts\(14,.*'string' is not assignable to type 'number'/);
  assert.match(r.stdout, /missing the following properties .*save, remove, list/);
});
