'use strict';
// examples/node: the quick-start counter server (serving examples/web) and the zod example.
const test = require('node:test');
const assert = require('node:assert/strict');
const { spawn, spawnSync } = require('child_process');
const fs = require('fs');
const http = require('http');
const path = require('path');
const WebSocket = require('ws');
const { tmpDir, waitFor, httpGet: get } = require('./helpers');

const examples = path.resolve(__dirname, '..', '..', 'examples', 'node');
const webDir = path.resolve(__dirname, '..', '..', 'examples', 'web');
// The examples `require('syncengine')`: resolve it (and zod) from this suite's node_modules.
const env = { ...process.env, NODE_PATH: path.join(__dirname, 'node_modules') };

function startCounter(t, args) {
  const child = spawn(
    process.execPath,
    [path.join(examples, 'counter_server.js'), '--port', '0', ...args],
    { env, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  t.after(() => child.exitCode === null && child.kill('SIGKILL'));
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  child.output = () => out;
  child.exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
  return child;
}

async function portOf(child) {
  await waitFor(
    () => /listening on http:\/\/[^:]+:(\d+)\//.test(child.output()),
    10000,
    'the server to listen',
  );
  return Number(child.output().match(/listening on http:\/\/[^:]+:(\d+)\//)[1]);
}

async function increment(port, amount, query = '') {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/${query}`);
  const frames = [];
  ws.on('message', (data) => frames.push(JSON.parse(data.toString())));
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  await waitFor(() => frames.length >= 1, 5000, 'initial_state');
  const before = frames[0].data.counter;
  ws.send(JSON.stringify({ type: 'increment', amount }));
  await waitFor(
    () => frames.some((f) => f.type === 'state_update' && f.data.counter === before + amount),
    5000,
    'the update',
  );
  ws.close();
  return { before, frames };
}

test('counter_server.js serves examples/web and the counter, and keeps it across a restart', async (t) => {
  const state = path.join(tmpDir(t), 'counter.sqlite');
  const first = startCounter(t, ['--state', state]);
  const port = await portOf(first);
  const page = await get(port, '/');
  assert.equal(page.status, 200);
  assert.equal(page.body, fs.readFileSync(path.join(webDir, 'index.html'), 'utf8'));
  const { before, frames } = await increment(port, 5);
  assert.equal(before, 0);
  assert.equal(frames[0].type, 'initial_state');
  first.kill('SIGINT');
  assert.equal(await first.exited, 0);
  assert.match(first.output(), /counter server stopped/);

  const second = startCounter(t, ['--state', state]);
  const port2 = await portOf(second);
  const again = await increment(port2, 2);
  assert.equal(again.before, 5);
  second.kill('SIGTERM');
  assert.equal(await second.exited, 0);
});

test('counter_server.js --token: only clients that bring the token get in', async (t) => {
  const child = startCounter(t, ['--token', 's3cret']);
  const port = await portOf(child);
  for (const query of ['', '?token=wrong']) {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/${query}`);
    const frames = [];
    ws.on('message', (data) => frames.push(data.toString()));
    const code = await new Promise((resolve) => ws.once('close', resolve));
    assert.equal(code, 4401, `no way in with "${query}"`);
    assert.equal(frames.length, 0);
  }
  const viaQuery = await increment(port, 3, '?token=s3cret');
  assert.equal(viaQuery.frames[0].type, 'initial_state');
  const bearer = new WebSocket(`ws://127.0.0.1:${port}/`, {
    headers: { Authorization: 'Bearer s3cret' },
  });
  const first = await new Promise((resolve, reject) => {
    bearer.once('message', (data) => resolve(JSON.parse(data.toString())));
    bearer.once('error', reject);
  });
  assert.equal(first.data.counter, 3);
  bearer.close();
  child.kill('SIGTERM');
  assert.equal(await child.exited, 0);
});

function getWith(port, urlPath, headers) {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: urlPath, headers }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode));
      })
      .on('error', reject);
  });
}

test('counter_server.js: the token from a file or the environment, printed in the URL, guards /metrics', async (t) => {
  const file = path.join(tmpDir(t), 'token');
  fs.writeFileSync(file, 'fr0m-file\n');
  const cases = [
    { args: ['--token-file', file], token: 'fr0m-file' },
    { args: [], token: 'fr0m-env', extraEnv: { LIBSYNC_DEMO_TOKEN: 'fr0m-env' } },
  ];
  for (const { args, token, extraEnv } of cases) {
    const child = spawn(
      process.execPath,
      [path.join(examples, 'counter_server.js'), '--port', '0', ...args],
      { env: { ...env, ...extraEnv }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    t.after(() => child.exitCode === null && child.kill('SIGKILL'));
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.output = () => out;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    const port = await portOf(child);
    assert.match(out, new RegExp(`listening on http://127\\.0\\.0\\.1:${port}/\\?token=${token}\\n`));
    assert.equal(await getWith(port, '/metrics'), 401);
    assert.equal(await getWith(port, '/metrics?token=wrong'), 401);
    assert.equal(await getWith(port, `/metrics?token=${token}`), 200);
    assert.equal(await getWith(port, '/metrics', { Authorization: `Bearer ${token}` }), 200);
    assert.equal(await getWith(port, '/'), 200); // the page holds no secret
    assert.equal(await getWith(port, '/healthz'), 200);
    await increment(port, 1, `?token=${token}`);
    child.kill('SIGTERM');
    assert.equal(await exited, 0);
  }
});

test('counter_server.js --help prints the usage; a bad command line is a usage error', () => {
  const script = path.join(examples, 'counter_server.js');
  const help = spawnSync(process.execPath, [script, '--help'], { env, encoding: 'utf8', timeout: 20000 });
  assert.equal(help.status, 0, help.stderr);
  assert.match(help.stdout, /^usage: node counter_server\.js/);
  assert.match(help.stdout, /--token-file PATH/);
  for (const [args, message] of [
    [['--bogus'], /Unknown option '--bogus'/],
    [['--token', 'a', '--token-file', 'x'], /not both/],
    [['--token-file', '/nonexistent/token'], /ENOENT/],
    [['--token', 'a b'], /the token must be non-empty/],
  ]) {
    const r = spawnSync(process.execPath, [script, ...args], { env, encoding: 'utf8', timeout: 20000 });
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, message);
    assert.match(r.stderr, /usage:/);
  }
});

test('zod_validation.js applies valid messages and reports each invalid one', () => {
  const r = spawnSync(process.execPath, [path.join(examples, 'zod_validation.js')], {
    env,
    encoding: 'utf8',
    timeout: 20000,
  });
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines.filter((l) => l.startsWith('rejected (validator)')).length, 3);
  assert.match(r.stdout, /amount: Number must be greater than 0/);
  assert.equal(lines.at(-1), 'final state {"counter":2,"name":"team board"} at version 2');
});

test('ws_server.js: the engine inside a `ws` server, two clients converge', async (t) => {
  const child = spawn(process.execPath, [path.join(examples, 'ws_server.js'), '--port', '0'], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.after(() => child.exitCode === null && child.kill('SIGKILL'));
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  await waitFor(() => /listening on http:\/\/[^:]+:(\d+)\//.test(out), 10000, 'the ws server');
  const port = Number(out.match(/listening on http:\/\/[^:]+:(\d+)\//)[1]);
  const page = await get(port, '/');
  assert.equal(page.body, fs.readFileSync(path.join(webDir, 'index.html'), 'utf8'));
  const watcher = new WebSocket(`ws://127.0.0.1:${port}/`);
  const seen = [];
  watcher.on('message', (data) => seen.push(JSON.parse(data.toString())));
  await new Promise((resolve) => watcher.once('open', resolve));
  await increment(port, 3);
  await waitFor(
    () => seen.some((f) => f.type === 'state_update' && f.data.counter === 3),
    5000,
    'the other client to follow',
  );
  assert.equal(seen[0].type, 'initial_state');
  const closed = new Promise((resolve) => watcher.once('close', resolve));
  child.kill('SIGINT');
  await closed;
  await new Promise((resolve) => child.once('exit', resolve));
  assert.match(out, /ws server stopped/);
});
