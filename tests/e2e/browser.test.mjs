// The demo page in headless Chromium: two tabs follow one counter, and both come back (with the
// persisted counter) after the server restarts; after a SIGKILL the page resumes with a patch.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, accessSync, constants } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import WebSocket from 'ws';
import { startServer } from './server.mjs';

const CHROMIUM = process.env.LIBSYNC_CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = process.env.LIBSYNC_E2E_ARTIFACTS || join(tmpdir(), 'libsync-e2e-artifacts');
// Pings every 200 ms: a page that did not answer "pong" would be closed after 400 ms.
const HEARTBEAT = ['--heartbeat-ms', '200'];
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

async function expectText(page, selector, text, timeout = 15000) {
  await page.waitForFunction(([sel, want]) => document.querySelector(sel)?.textContent === want,
    [selector, text], { timeout });
}

async function expectStatus(page, status, timeout = 15000) {
  await page.waitForFunction((want) => document.body.dataset.status === want, status, { timeout });
}

// The same port again, so the open pages can reconnect; retried while the old socket lingers.
async function restartOn(port, dataDir) {
  const until = Date.now() + 10000;
  for (;;) {
    try {
      return await startServer({ port, dataDir, args: HEARTBEAT });
    } catch (err) {
      if (Date.now() > until) throw err;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}

test('two tabs stay in step and survive a server restart', { timeout: 120000 }, async () => {
  accessSync(CHROMIUM, constants.X_OK);
  mkdirSync(ARTIFACTS, { recursive: true });
  const profile = mkdtempSync(join(tmpdir(), 'libsync-chromium-'));
  const dataDir = join(profile, 'data');
  let server = await startServer({ dataDir, args: HEARTBEAT });
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, args: ARGS, viewport: { width: 640, height: 480 },
  });
  const pageErrors = [];
  try {
    const [a, b] = [await context.newPage(), await context.newPage()];
    for (const page of [a, b]) page.on('pageerror', (err) => pageErrors.push(err.message));
    await a.goto(`${server.http}/`);
    await b.goto(`${server.http}/?path=/counter`);
    for (const page of [a, b]) {
      await expectStatus(page, 'open');
      await expectText(page, '#counter', '0');
      await expectText(page, '#version', '0');
    }

    await a.click('#inc');
    await expectText(b, '#counter', '1');
    await b.click('#inc10');
    await expectText(a, '#counter', '11');
    await a.click('#dec');
    await expectText(b, '#counter', '10');
    await expectText(a, '#version', '3');
    await expectText(b, '#version', '3');
    await b.screenshot({ path: join(ARTIFACTS, 'demo-two-tabs.png') });

    // Both pages answer the heartbeat: after several ping intervals they are still on their
    // first connection (the server accepted exactly two).
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const metrics = await (await fetch(`${server.http}/metrics`)).text();
    assert.match(metrics, /^libsync_server_connections_accepted_total 2$/m, metrics);
    for (const page of [a, b]) assert.equal(await page.evaluate(() => document.body.dataset.status), 'open');

    // Restart: both pages notice, reconnect on their own, and show the persisted counter.
    const port = server.port;
    assert.equal(await server.stop('SIGTERM'), 0, server.stderr());
    for (const page of [a, b]) await expectStatus(page, 'closed');
    await b.screenshot({ path: join(ARTIFACTS, 'demo-disconnected.png') });
    server = await restartOn(port, dataDir);
    for (const page of [a, b]) {
      await expectStatus(page, 'open', 30000);
      await expectText(page, '#counter', '10');
    }
    await b.click('#inc');
    await expectText(a, '#counter', '11');
    await expectText(a, '#version', '4');
    await a.screenshot({ path: join(ARTIFACTS, 'demo-after-restart.png') });
    assert.deepEqual(pageErrors, []);
  } finally {
    await context.close();
    const code = await server.stop();
    rmSync(profile, { recursive: true, force: true });
    assert.equal(code, 0, server.stderr());
  }
});

test('two rooms are two counters: each shared by its own tabs, both kept apart', { timeout: 120000 }, async () => {
  const server = await startServer({});
  try {
    await withBrowser(async (context) => {
      const pageErrors = [];
      const open = async (query) => {
        const page = await context.newPage();
        page.on('pageerror', (err) => pageErrors.push(err.message));
        await page.goto(`${server.http}/${query}`);
        await expectStatus(page, 'open');
        return page;
      };
      // Two tabs in room "alpha", one in "béta" (a name that needs encoding), one in the
      // default room.
      const [alpha1, alpha2, beta, plain] = [await open('?room=alpha'), await open('?room=alpha'),
        await open('?room=b%C3%A9ta'), await open('')];
      assert.equal(await alpha1.textContent('#room'), 'room “alpha”');
      assert.equal(await beta.textContent('#room'), 'room “béta”');
      assert.equal(await plain.textContent('#room'), 'the default room');
      for (const page of [alpha1, alpha2, beta, plain]) await expectText(page, '#counter', '0');

      await alpha1.click('#inc10');
      await expectText(alpha2, '#counter', '10');
      await beta.click('#inc');
      await expectText(beta, '#counter', '1');
      await alpha2.click('#dec');
      await expectText(alpha1, '#counter', '9');
      await plain.click('#inc');
      await expectText(plain, '#counter', '1');
      // Each room counted only its own clicks, versions included.
      await expectText(alpha1, '#version', '2');
      await expectText(beta, '#version', '1');
      await expectText(beta, '#counter', '1');
      await expectText(plain, '#version', '1');
      await alpha1.screenshot({ path: join(ARTIFACTS, 'demo-room-alpha.png') });
      await beta.screenshot({ path: join(ARTIFACTS, 'demo-room-beta.png') });

      const metrics = await (await fetch(`${server.http}/metrics`)).text();
      assert.match(metrics, /^libsync_rooms_loaded\{path="\/rooms\/"\} 2$/m, metrics);
      assert.deepEqual(pageErrors, []);
    });
  } finally {
    assert.equal(await server.stop(), 0, server.stderr());
  }
});

async function withBrowser(fn) {
  accessSync(CHROMIUM, constants.X_OK);
  const profile = mkdtempSync(join(tmpdir(), 'libsync-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, args: ARGS, viewport: { width: 640, height: 480 },
  });
  try {
    return await fn(context);
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

// Counts the WebSockets a page opens, to see whether it keeps retrying.
const COUNT_SOCKETS = () => {
  const Native = window.WebSocket;
  window.__sockets = 0;
  window.WebSocket = class extends Native {
    constructor(...args) { super(...args); window.__sockets += 1; }
  };
};

test('a page without the token says "not authorised" and stops retrying', { timeout: 120000 }, async () => {
  const server = await startServer({ args: ['--token', 's3cret'] });
  try {
    await withBrowser(async (context) => {
      const page = await context.newPage();
      await page.addInitScript(COUNT_SOCKETS);
      const requests = [];
      page.on('request', (req) => requests.push(new URL(req.url()).pathname));
      await page.goto(`${server.http}/`);
      await expectStatus(page, 'refused');
      assert.match(await page.textContent('#status'), /not authorised \(code 4401/);
      assert.equal(await page.evaluate(() => document.body.dataset.closeCode), '4401');
      // Several backoff periods later it has not tried again.
      await new Promise((resolve) => setTimeout(resolve, 2500));
      assert.equal(await page.evaluate(() => window.__sockets), 1);
      assert.equal(await page.evaluate(() => document.body.dataset.status), 'refused');
      // The page asks for nothing it does not have (no /favicon.ico).
      assert.deepEqual(requests.filter((p) => p.endsWith('.ico')), []);

      // The URL the server printed lets the page in.
      assert.equal(server.url, `${server.http}/?token=s3cret`);
      const allowed = await context.newPage();
      await allowed.goto(server.url);
      await expectStatus(allowed, 'open');
      await expectText(allowed, '#counter', '0');
    });
  } finally {
    assert.equal(await server.stop(), 0, server.stderr());
  }
});

test('the page shows the close code the server sent, also while it cannot reconnect', { timeout: 120000 }, async () => {
  const server = await startServer({});
  let stopped = false;
  try {
    await withBrowser(async (context) => {
      const page = await context.newPage();
      await page.goto(`${server.http}/`);
      await expectStatus(page, 'open');
      assert.equal(await server.stop('SIGTERM'), 0, server.stderr());
      stopped = true;
      await page.waitForFunction(() => /code 1001/.test(document.getElementById('status').textContent));
      assert.equal(await page.evaluate(() => document.body.dataset.closeCode), '1001');
      // A reconnect attempt against the stopped server fails with 1006 in the browser; the page
      // still tells what the server said when it closed.
      await page.waitForFunction(() => /not reachable/.test(document.getElementById('status').textContent),
        null, { timeout: 20000 });
      const status = await page.textContent('#status');
      assert.match(status, /last closed with code 1001/, status);
      assert.doesNotMatch(status, /1006/, status);
    });
  } finally {
    if (!stopped) await server.stop();
  }
});

test('after a SIGKILL and a restart the page resumes with a patch and shows the right counter', { timeout: 120000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'libsync-resume-'));
  const dataDir = join(dir, 'data');
  // Some bulk beside the counter, so that a patch is the smaller frame (a server sends the whole
  // state instead when that is smaller, also to resume).
  let server = await startServer({ dataDir, args: [...HEARTBEAT, '--pad', '256'] });
  try {
    await withBrowser(async (context) => {
      const pageErrors = [];
      const page = await context.newPage();
      page.on('pageerror', (err) => pageErrors.push(err.message));
      await page.goto(`${server.http}/?room=resume`);
      await expectStatus(page, 'open');
      await expectText(page, '#counter', '0');
      assert.equal(await page.evaluate(() => document.body.dataset.wire), 'v2');

      // A stream of changes from another client (the seed's wire), which the page follows.
      const writer = new WebSocket(server.ws('/rooms/resume'));
      await new Promise((resolve, reject) => { writer.once('open', resolve); writer.once('error', reject); });
      for (let i = 0; i < 40; i += 1) writer.send(JSON.stringify({ type: 'increment', amount: 3 }));
      await expectText(page, '#counter', '120');
      await expectText(page, '#version', '40');
      writer.terminate();

      // The server dies without a word; the page notices and retries.
      const port = server.port;
      await server.stop('SIGKILL');
      await expectStatus(page, 'closed');
      server = await restartOn(port, dataDir);
      // Back on the same port and data: the page asked to resume from version 40 and its first
      // frame was a patch from exactly there.
      await expectStatus(page, 'open', 30000);
      await page.waitForFunction(() => document.body.dataset.patchBase === '40', null, { timeout: 15000 });
      assert.equal(await page.evaluate(() => document.body.dataset.frame), 'patch');
      await expectText(page, '#counter', '120');
      await expectText(page, '#version', '40');
      await page.click('#inc10');
      await expectText(page, '#counter', '130');
      await expectText(page, '#version', '41');
      await page.screenshot({ path: join(ARTIFACTS, 'demo-resumed.png') });
      assert.deepEqual(pageErrors, []);
    });
  } finally {
    assert.equal(await server.stop(), 0, server.stderr());
    rmSync(dir, { recursive: true, force: true });
  }
});
