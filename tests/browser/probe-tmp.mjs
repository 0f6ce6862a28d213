import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { PASSWORD, Site, BIN } from './site.mjs';
const site = await Site.start();
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ['--no-sandbox', '--disable-gpu'] });
try {
  site.user('default', 'alice');
  const dir = join(site.tmp, 'ct');
  execFileSync(BIN, ['synth', '--out', dir, '--seed', '42', '--slices', '300', '--kinds', 'ct-head', '--patients', '2']);
  site.import(dir);
  const list = await (await fetch(`${site.base}/dicom-web/studies`, { headers: { Authorization: `Bearer ${site.token}` } })).json();
  for (const [i, s] of list.entries()) {
    const study = s['0020000D'].Value[0];
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    await ctx.request.post(`${site.base}/api/v1/auth/login`, { data: { username: 'alice', password: PASSWORD } });
    const page = await ctx.newPage();
    await page.goto(`${site.base}/view/${study}`, { waitUntil: 'commit' });
    const first = await page.waitForFunction(() => ['rendered', 'raw'].includes(document.getElementById('view')?.dataset.state) && performance.now(), null, { polling: 'raf', timeout: 60000 }).then((h) => h.jsonValue());
    const entries = await page.evaluate(() => performance.getEntriesByType('resource').map((e) => [e.name.replace(location.origin, '').slice(0, 90), Math.round(e.startTime), Math.round(e.responseStart), Math.round(e.responseEnd), e.transferSize]));
    const nav = await page.evaluate(() => { const n = performance.getEntriesByType('navigation')[0]; return [Math.round(n.responseEnd), Math.round(n.domContentLoadedEventEnd)]; });
    console.log(`run ${i}: first ${Math.round(first)} nav`, nav);
    for (const e of entries.filter((e) => e[1] < first + 50).slice(0, 30)) console.log('  ', e.join(' '));
    await ctx.close();
  }
} finally { await browser.close(); await site.stop(); }
