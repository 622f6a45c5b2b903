// The demo page in headless Chromium against two counter_server --redis nodes on one redis-server
// (issue 18): one page on node A, one on node B, both clicked, both show the same count; rooms
// too.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, accessSync, mkdirSync, constants } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { Cluster, redisMissing } from './cluster.mjs';

const CHROMIUM = process.env.LIBSYNC_CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = process.env.LIBSYNC_E2E_ARTIFACTS || join(tmpdir(), 'libsync-e2e-artifacts');
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

async function expectText(page, selector, text, timeout = 15000) {
  try {
    await page.waitForFunction(([sel, want]) => document.querySelector(sel)?.textContent === want,
      [selector, text], { timeout });
  } catch (err) {
    // What the page shows instead, for the report.
    const shown = await page.evaluate(() => ({
      url: location.href, status: document.body.dataset.status,
      counter: document.querySelector('#counter')?.textContent,
      version: document.querySelector('#version')?.textContent,
    })).catch(() => ({}));
    throw new Error(`${selector} never showed ${text}: ${JSON.stringify(shown)} (${err.message.split('\n')[0]})`);
  }
}

test('one page on node A, one on node B: clicks on both, both show the same count',
  { skip: redisMissing() ?? false, timeout: 120000 }, async () => {
    accessSync(CHROMIUM, constants.X_OK);
    mkdirSync(ARTIFACTS, { recursive: true });
    const cluster = await Cluster.start({ nodes: 2, senders: 1 });
    const profile = mkdtempSync(join(tmpdir(), 'libsync-chromium-'));
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM, headless: true, args: ARGS, viewport: { width: 640, height: 480 },
    });
    const pageErrors = [];
    try {
      const open = async (node, query = '') => {
        const page = await context.newPage();
        page.on('pageerror', (err) => pageErrors.push(err.message));
        await page.goto(`${cluster.http(node)}/${query}`);
        await page.waitForFunction(() => document.body.dataset.status === 'open', null, { timeout: 15000 });
        return page;
      };
      const [a, b] = [await open(0), await open(1)];
      for (const page of [a, b]) await expectText(page, '#counter', '0');
      await a.click('#inc');
      await expectText(b, '#counter', '1');
      await b.click('#inc10');
      await expectText(a, '#counter', '11');
      await a.click('#dec');
      await b.click('#inc');
      for (const page of [a, b]) {
        await expectText(page, '#counter', '11');
        await expectText(page, '#version', '4');
      }
      await a.screenshot({ path: join(ARTIFACTS, 'cluster-node-a.png') });
      await b.screenshot({ path: join(ARTIFACTS, 'cluster-node-b.png') });

      // A room, one tab on each node; the default counter is left as it was.
      const [ra, rb] = [await open(0, '?room=alpha'), await open(1, '?room=alpha')];
      await ra.click('#inc10');
      await expectText(rb, '#counter', '10');
      await rb.click('#dec');
      for (const page of [ra, rb]) {
        await expectText(page, '#counter', '9');
        await expectText(page, '#version', '2');
      }
      await expectText(a, '#counter', '11');
      assert.deepEqual(pageErrors, []);
    } finally {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
      const codes = await cluster.stop();
      for (const { id, code, stderr } of codes) assert.equal(code, 0, `node ${id}\n${stderr}`);
    }
  });
