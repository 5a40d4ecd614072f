// Headless Chromium (Debian's `chromium`) loads a page that uses the built
// bundle; it subscribes, survives a drain and a restart, and the test asserts
// what the page shows. SCREENSHOT_TO_DOCS=1 also updates docs/live-page.png.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, copyFileSync, rmSync } from 'node:fs';
import { createServer, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { pkgRoot, startServer, until } from './harness.mjs';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

/**
 * The page and the bundle; with `engine` set, also a same-origin route to the
 * engine's /sse and /health that answers WebSocket upgrades with nothing (a
 * proxy that blocks them), so the page must fall back to SSE.
 */
function serveStatic(engine) {
  const files = {
    '/': ['test/page/index.html', 'text/html'],
    '/shardcast.min.js': ['dist/shardcast.min.js', 'text/javascript'],
  };
  const srv = createServer((req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    if (engine && (path === '/sse' || path === '/health')) {
      const up = request({ host: '127.0.0.1', port: engine.port, path: req.url, headers: req.headers }, (r) => {
        res.writeHead(r.statusCode, r.headers);
        r.pipe(res);
      });
      up.on('error', () => res.destroy());
      res.on('close', () => up.destroy());
      return up.end();
    }
    const f = files[path];
    if (!f) return res.writeHead(404).end();
    res.writeHead(200, { 'content-type': f[1], 'cache-control': 'no-store' }).end(readFileSync(join(pkgRoot, f[0])));
  });
  srv.on('upgrade', (req, socket) => socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n'));
  return new Promise((r) => srv.listen(0, '127.0.0.1', () => r(srv)));
}

async function launch(t) {
  if (!existsSync(CHROMIUM)) {
    if (process.env.SHARDCAST_REQUIRE_CHROMIUM) assert.fail(CHROMIUM + ' missing');
    t.skip('chromium not installed (apt-get install chromium)');
    return null;
  }
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
    rmSync(profile, { recursive: true, force: true });
  });
  return browser;
}

test('Chromium: a page with the bundle survives a drain and a restart, in order', { timeout: 60000 }, async (t) => {
  const browser = await launch(t);
  if (!browser) return;
  let s = await startServer();
  const web = await serveStatic();
  after(async () => {
    web.close();
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

test('Chromium: WebSocket blocked on the way, the page falls back to SSE and survives a drain and a restart', { timeout: 60000 }, async (t) => {
  const browser = await launch(t);
  if (!browser) return;
  const engine = { port: 0 };
  let s = await startServer();
  engine.port = s.port;
  const web = await serveStatic(engine);
  after(async () => {
    web.close();
    await s.kill();
  });
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  const origin = `127.0.0.1:${web.address().port}`;
  await page.goto(`http://${origin}/?ws=${encodeURIComponent(`ws://${origin}/ws`)}`);
  const shown = () => page.$$eval('#feed li', (lis) => lis.map((li) => li.textContent));
  const log = () => page.textContent('#log');
  await until(async () => /subscribed at/.test(await log()), 15000, 'page subscribed');
  assert.match(await page.textContent('#status'), /connected \(sse\)/);
  for (let i = 1; i <= 3; i++) await s.publish('news', { text: 'message ' + i });
  await until(async () => (await shown()).length === 3, 10000, 'three on the page');
  const epoch1 = (await shown())[0].split(':')[0];
  await s.drain();
  await until(async () => /disconnected: 4001 reconnect_after_ms=\d+/.test(await log()), 10000, 'page saw 4001 over SSE');
  s = await startServer({ port: s.port });
  await until(async () => (await shown()).length === 4, 15000, 'the lost notice');
  for (let i = 4; i <= 6; i++) await s.publish('news', { text: 'message ' + i });
  await until(async () => (await shown()).length === 7, 10000, 'seven entries');
  const items = await shown();
  const epoch2 = items[4].split(':')[0];
  assert.deepEqual(items, [
    ...[1, 2, 3].map((i) => `${epoch1}:${i}message ${i}`),
    `history lost (new_epoch): now at ${epoch2}:0`,
    ...[4, 5, 6].map((i) => `${epoch2}:${i - 3}message ${i}`),
  ]);
  assert.match(await page.textContent('#status'), /connected \(sse\)/);
  assert.deepEqual(errors, []);
});
