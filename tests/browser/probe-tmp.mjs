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
    const cdp = await ctx.newCDPSession(page);
    await cdp.send('Profiler.enable');
    await cdp.send('Profiler.setSamplingInterval', { interval: 200 });
    await cdp.send('Profiler.start');
    await page.goto(`${site.base}/view/${study}`, { waitUntil: 'commit' });
    const first = await page.waitForFunction(() => ['rendered', 'raw'].includes(document.getElementById('view')?.dataset.state) && performance.now(), null, { polling: 'raf', timeout: 60000 }).then((h) => h.jsonValue());
    const { profile } = await cdp.send('Profiler.stop');
    const self = new Map();
    const byId = new Map(profile.nodes.map((n) => [n.id, n]));
    const dt = profile.timeDeltas; let total = 0;
    const counts = new Map();
    for (let k = 0; k < profile.samples.length; k++) { counts.set(profile.samples[k], (counts.get(profile.samples[k]) || 0) + dt[k]); total += dt[k]; }
    for (const [id, us] of counts) { const n = byId.get(id); const key = `${n.callFrame.functionName || '(anon)'} ${n.callFrame.url.split('/').pop()}:${n.callFrame.lineNumber}`; self.set(key, (self.get(key) || 0) + us); }
    const top = [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, 15);
    console.log(`run ${i}: first ${Math.round(first)} ms, profiled ${Math.round(total / 1000)} ms`);
    for (const [k, us] of top) console.log(`   ${(us / 1000).toFixed(1)} ms  ${k}`);
    await ctx.close();
  }
} finally { await browser.close(); await site.stop(); }
