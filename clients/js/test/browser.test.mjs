// Headless Chromium (Debian's `chromium`) loads a page that uses the built
// bundle; it subscribes, survives a drain and a restart, and the test asserts
// what the page shows. SCREENSHOT_TO_DOCS=1 also updates docs/live-page.png.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, copyFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { pkgRoot, startServer, until } from './harness.mjs';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

function serveStatic() {
  const files = {
    '/': ['test/page/index.html', 'text/html'],
    '/shardcast.min.js': ['dist/shardcast.min.js', 'text/javascript'],
  };
  const srv = createServer((req, res) => {
    const f = files[new URL(req.url, 'http://x').pathname];
    if (!f) return res.writeHead(404).end();
    res.writeHead(200, { 'content-type': f[1], 'cache-control': 'no-store' }).end(readFileSync(join(pkgRoot, f[0])));
  });
  return new Promise((r) => srv.listen(0, '127.0.0.1', () => r(srv)));
}

test('Chromium: a page with the bundle survives a drain and a restart, in order', { timeout: 60000 }, async (t) => {
  if (!existsSync(CHROMIUM)) {
    if (process.env.SHARDCAST_REQUIRE_CHROMIUM) assert.fail(CHROMIUM + ' missing');
    return t.skip('chromium not installed (apt-get install chromium)');
  }
  let s = await startServer();
  const web = await serveStatic();
  const profile = mkdtempSync(join(tmpdir(), 'shardcast-chromium-'));
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: 620, height: 720 },
  });
  after(async () => {
    await browser.close().catch(() => {});
    web.close();
    rmSync(profile, { recursive: true, force: true });
    await s.kill();
  });
  const page = browser.pages()[0] || (await browser.newPage());
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`http://127.0.0.1:${web.address().port}/?ws=${encodeURIComponent(s.url)}`);
  const shown = () => page.$$eval('#feed li', (lis) => lis.map((li) => li.textContent));
  const status = () => page.textContent('#status');
  const log = () => page.textContent('#log');
  await until(async () => /subscribed at/.test(await log()), 15000, 'page subscribed');

  for (let i = 1; i <= 5; i++) await s.publish('news', { text: 'message ' + i });
  await until(async () => (await shown()).length === 5, 10000, 'five on the page');
  const epoch1 = (await shown())[0].split(':')[0];

  await s.drain();
  await until(async () => /disconnected: 4001 reconnect_after_ms=\d+/.test(await log()), 10000, 'page saw 4001');
  s = await startServer({ port: s.port });
  await until(async () => (await shown()).length === 6, 15000, 'the lost notice');
  assert.match(await status(), /connected \(websocket\)/);
  for (let i = 6; i <= 10; i++) await s.publish('news', { text: 'message ' + i });
  await until(async () => (await shown()).length === 11, 10000, 'eleven entries');

  const items = await shown();
  const epoch2 = items[6].split(':')[0];
  assert.notEqual(epoch1, epoch2);
  assert.deepEqual(items, [
    ...[1, 2, 3, 4, 5].map((i) => `${epoch1}:${i}message ${i}`),
    `history lost (new_epoch): now at ${epoch2}:0`,
    ...[6, 7, 8, 9, 10].map((i) => `${epoch2}:${i - 5}message ${i}`),
  ]);
  assert.deepEqual(errors, []);
  const out = join(pkgRoot, 'test-output');
  mkdirSync(out, { recursive: true });
  await page.screenshot({ path: join(out, 'live-page.png'), fullPage: true });
  if (process.env.SCREENSHOT_TO_DOCS) {
    mkdirSync(join(pkgRoot, 'docs'), { recursive: true });
    copyFileSync(join(out, 'live-page.png'), join(pkgRoot, 'docs', 'live-page.png'));
  }
});
