// A measurement, not a test: time from navigation to the viewer's first image and to every
// slice loaded, for a synthetic CT head of N slices (default 300) on a real `vesalius serve`,
// cold cache, on loopback and with the network throttled by the Chrome DevTools protocol
// (10 Mbit/s, 40 ms latency). Also checks that while loading under throttling the slice on
// screen is never waited for behind others: after a jump, its frame arrives within a few
// frame times.
//   node viewer-timing.mjs [slices]      (VESALIUS_BIN: the binary, target/debug by default)

import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { Site, synth, PASSWORD } from './site.mjs';

const slices = Number(process.argv[2] || 300);
const site = await Site.start();
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ['--no-sandbox', '--disable-gpu'] });
try {
  site.user('default', 'alice');
  const ct = synth(join(site.tmp, 'ct'), 7, slices);
  site.import(ct.dir);
  const study = Object.values(ct.images)[0].study;
  for (const [label, throttle] of [['loopback', null], ['10 Mbit/s, 40 ms', { latency: 40, downloadThroughput: 10e6 / 8, uploadThroughput: 10e6 / 8 }]]) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await context.newPage();
    await page.goto(`${site.base}/login?next=/worklist`);
    await page.fill('input[name=username]', 'alice');
    await page.fill('input[name=password]', PASSWORD);
    await Promise.all([page.waitForURL(/\/worklist/), page.click('form button')]);
    if (throttle) {
      const cdp = await context.newCDPSession(page);
      await cdp.send('Network.enable');
      await cdp.send('Network.emulateNetworkConditions', { offline: false, ...throttle });
    }
    const t0 = Date.now();
    await page.goto(`${site.base}/view/${study}`);
    await page.waitForFunction(() => ['rendered', 'raw'].includes(document.getElementById('view')?.dataset.state), null, { timeout: 600000 });
    const first = Date.now() - t0;
    // Jump 100 slices on while loading: how long until that slice is shown from its raw frame.
    await page.keyboard.press('Home');
    const jumped = Date.now();
    await page.waitForFunction(() => document.getElementById('view').dataset.state === 'raw', null, { timeout: 600000 });
    const jump = Date.now() - jumped;
    await page.waitForFunction(() => { const d = document.getElementById('view').dataset; return d.loaded === d.slices; }, null, { timeout: 600000 });
    const all = Date.now() - t0;
    console.log(`${label}: ${slices} slices: first image ${first} ms, slice 1 after a jump ${jump} ms, all ${all} ms`);
    await context.close();
  }
} finally {
  await browser.close();
  await site.stop();
}
