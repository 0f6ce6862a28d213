// The web app in real Chromium (Debian's /usr/bin/chromium driven by playwright-core): a real
// `vesalius serve` with a synthetic 24-slice CT head, desktop and phone (touch) viewports.
// Run: `scripts/test-browser` (or `npm test` here after `npm ci`, with target/debug/vesalius
// built). Screenshots: target/browser-artifacts/ (VESALIUS_ARTIFACTS).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { ARTIFACTS, Site, synth, launch, VIEWPORTS, login } from './site.mjs';


/** The linear VOI function of PS3.3 C.11.2.1.2.1 to 0..255, written here again on purpose. */
function linearVoi(x, c, w) {
  if (w <= 1) return x <= c - 0.5 ? 0 : 255;
  if (x <= c - 0.5 - (w - 1) / 2) return 0;
  if (x > c - 0.5 + (w - 1) / 2) return 255;
  return ((x - (c - 0.5)) / (w - 1) + 0.5) * 255;
}

let site;
let ct;
let browser;
let study;

before(async () => {
  site = await Site.start();
  site.user('default', 'alice');
  site.admin('org', 'create', 'north');
  site.user('north', 'bob');
  ct = synth(join(site.tmp, 'ct'), 7, 24);
  site.import(ct.dir);
  study = Object.values(ct.images)[0].study;
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close();
  if (site) await site.stop();
});

async function shot(page, name) {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`) });
}

const dataset = (page) => page.$eval('#view', (c) => ({ ...c.dataset }));

/** Waits until the canvas shows slice `i` (1-based) from its raw frame. */
async function waitSlice(page, i) {
  await page.waitForFunction((n) => {
    const d = document.getElementById('view')?.dataset;
    return d && d.slice === String(n) && d.state === 'raw';
  }, i, { timeout: 20000 });
}

/**
 * Checks the canvas against the modality values pydicom read: at each sample point of the image
 * shown, the pixel drawn over the point's centre must be the window's grey value (±1).
 */
async function checkPixels(page, label, win, invert = false) {
  const d = await dataset(page);
  const img = ct.images[d.sop];
  assert.ok(img, `${label}: the canvas shows ${d.sop}, an image of the synthetic study`);
  const [c, w] = win || img.window;
  assert.equal(Number(d.center), c, `${label}: window center`);
  assert.equal(Number(d.width), w, `${label}: window width`);
  const [scale, ox, oy] = [Number(d.scale), Number(d.ox), Number(d.oy)];
  assert.ok(scale > 1, `${label}: each image pixel covers more than one canvas pixel (${scale})`);
  const size = await page.$eval('#view', (cv) => [cv.width, cv.height]);
  const pts = img.points
    .map(([col, row, v]) => ({ col, row, v, x: Math.floor(ox + (col + 0.5) * scale), y: Math.floor(oy + (row + 0.5) * scale) }))
    .filter((p) => p.x >= 0 && p.y >= 0 && p.x < size[0] && p.y < size[1]);
  assert.ok(pts.length >= 10, `${label}: ${pts.length} sample points on the canvas`);
  const got = await page.$eval('#view', (cv, ps) => {
    const ctx = cv.getContext('2d');
    return ps.map((p) => Array.from(ctx.getImageData(p.x, p.y, 1, 1).data));
  }, pts);
  const bad = [];
  let between = 0;
  pts.forEach((p, i) => {
    const want = invert ? 255 - linearVoi(p.v, c, w) : linearVoi(p.v, c, w);
    const [r, g, b, a] = got[i];
    if (want > 0 && want < 255) between++;
    if (Math.abs(r - want) > 1 || r !== g || g !== b || a !== 255) {
      bad.push(`(${p.col},${p.row}) value ${p.v}: drawn ${[r, g, b, a]}, expected ${want.toFixed(2)}`);
    }
  });
  assert.deepEqual(bad, [], `${label}: canvas pixels differ from the windowed values`);
  return { points: pts.length, between };
}

/** Touch swipe (CDP touch events, as a finger would): from (x, y0) to (x, y1). */
async function swipe(cdp, x, y0, y1, steps = 6) {
  await cdp.send('Input.dispatchTouchEvent', { type: 'touchStart', touchPoints: [{ x, y: y0, id: 1 }] });
  for (let k = 1; k <= steps; k++) {
    await cdp.send('Input.dispatchTouchEvent', { type: 'touchMove', touchPoints: [{ x, y: y0 + ((y1 - y0) * k) / steps, id: 1 }] });
  }
  await cdp.send('Input.dispatchTouchEvent', { type: 'touchEnd', touchPoints: [] });
}

async function pinch(cdp, cx, cy, from, to, steps = 6) {
  const pts = (d) => [{ x: cx - d, y: cy, id: 1 }, { x: cx + d, y: cy, id: 2 }];
  await cdp.send('Input.dispatchTouchEvent', { type: 'touchStart', touchPoints: pts(from) });
  for (let k = 1; k <= steps; k++) {
    await cdp.send('Input.dispatchTouchEvent', { type: 'touchMove', touchPoints: pts(from + ((to - from) * k) / steps) });
  }
  await cdp.send('Input.dispatchTouchEvent', { type: 'touchEnd', touchPoints: [] });
}

for (const [name, options] of Object.entries(VIEWPORTS)) {
  test(`${name}: log in, find the study, read every slice, window it`, async () => {
    const context = await browser.newContext(options);
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    const requests = [];
    page.on('request', (r) => requests.push(r.url()));
    const step = (n) => shot(page, `${name}-${n}`);

    // No page works without a session: the app sends the visitor to log in; data is refused.
    await page.goto(`${site.base}/worklist`);
    await page.waitForURL(/\/login\?next=%2Fworklist$/);
    assert.equal((await page.request.get(`${site.base}/api/v1/search`)).status(), 401);
    const background = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    assert.equal(background, 'rgb(13, 17, 23)', 'the login page is styled by /app/pages.css');
    await step('01-login');
    await login(page, 'alice');

    // The worklist lists the study.
    const row = page.locator(`tr.study[data-uid="${study}"]`);
    await row.waitFor();
    assert.match(await row.innerText(), /Mitchell, Anna/);
    assert.match(await row.innerText(), /CT/);
    await step('02-worklist');

    // The viewer: the server's rendering first, then every raw frame.
    await Promise.all([page.waitForURL(/\/view\//), row.locator('a.open').click()]);
    const opened = Date.now();
    await page.waitForFunction(() => ['rendered', 'raw'].includes(document.getElementById('view')?.dataset.state));
    const firstImageMs = Date.now() - opened;
    // The first image is the server's: the study thumbnail at natural size, put into the page
    // itself (an <img> painted before the app runs, removed once the canvas shows the same).
    const preview = `/dicom-web/studies/${study}/thumbnail?viewport=8192,8192&quality=90`;
    assert.ok(requests.some((u) => u.endsWith(preview)), `the first image is asked of ${preview}`);
    const html = await (await page.request.get(`${site.base}/view/${study}`)).text();
    assert.ok(html.includes(`<img id="preview" class="preview" src="${preview}"`), 'the page carries the first image');
    assert.equal(await page.locator('#preview').count(), 0, 'the page\'s image gives way to the canvas');
    const thumb = await page.request.get(`${site.base}${preview}`);
    assert.equal(thumb.headers()['content-type'], 'image/jpeg');
    const shownSop = thumb.headers()['content-location'].split('/instances/')[1];
    assert.equal(ct.images[shownSop].number, Math.floor(24 / 2) + 1, 'the thumbnail is the middle slice');
    await page.waitForFunction(() => {
      const d = document.getElementById('view')?.dataset;
      return d && d.slices && d.loaded === d.slices;
    }, null, { timeout: 30000 });
    const allMs = Date.now() - opened;
    const n = Number((await dataset(page)).slices);
    assert.equal(n, 24);
    // Raw frames come several per request (the series frames request, nearest first), not
    // one request per slice: the 24 slices in one or two.
    const single = requests.filter((u) => /\/frames\/1$/.test(u));
    assert.deepEqual(single, [], 'no frame was asked for on its own');
    const batches = requests.filter((u) => /\/series\/[0-9.]+\/frames\?instances=/.test(u));
    assert.ok(batches.length >= 1 && batches.length <= 2, `${batches.length} frames requests for ${n} slices`);
    const order = batches.flatMap((u) => decodeURIComponent(new URL(u).searchParams.get('instances')).split(','))
      .map((sop) => ct.images[sop.split(':')[0]].number);
    assert.equal(new Set(order).size, n, 'every frame was fetched raw');
    // Nearest first: the middle slice (shown first) is asked for first, then its neighbours.
    const middle = Math.floor(n / 2) + 1;
    assert.equal(order[0], middle, `first frame asked for: ${order.slice(0, 6)}`);
    assert.ok(order.slice(0, 5).every((k) => Math.abs(k - middle) <= 2), `first frames: ${order.slice(0, 6)}`);
    await step('03-viewer');
    console.log(`${name}: first image ${firstImageMs} ms, all ${n} slices ${allMs} ms (loopback, debug build)`);

    // Scroll through every slice, checking the pixels of each against pydicom's values.
    const box = await page.locator('#view').boundingBox();
    const cx = box.x + box.width / 2, cy = box.y + box.height / 2;
    let checked = 0;
    let between = 0;
    const seen = new Set();
    const visit = async (i) => {
      await waitSlice(page, i);
      const r = await checkPixels(page, `${name} slice ${i}`);
      checked += r.points;
      between += r.between;
      seen.add((await dataset(page)).sop);
    };
    if (name === 'desktop') {
      await page.keyboard.press('Home');
      await visit(1);
      await page.mouse.move(cx, cy);
      for (let i = 2; i <= n; i++) {
        await page.mouse.wheel(0, 100);
        await visit(i);
      }
      await page.keyboard.press('Home');
      await waitSlice(page, 1);
      await page.keyboard.press('End');
      await waitSlice(page, n);
      await page.keyboard.press('ArrowUp');
      await waitSlice(page, n - 1);
    } else {
      const cdp = await context.newCDPSession(page);
      await page.click('[data-tool=scroll]');
      // A long swipe down goes back to the first slice; short swipes up go one slice on.
      await swipe(cdp, cx, box.y + 40, box.y + box.height - 40, 12);
      await swipe(cdp, cx, box.y + 40, box.y + box.height - 40, 12);
      await visit(1);
      const stepPx = Math.max(6, Math.min(30, box.height / n));
      for (let i = 2; i <= n; i++) {
        await swipe(cdp, cx, cy + stepPx * 0.75, cy - stepPx * 0.75, 3);
        await visit(i);
      }
      // Pinch to zoom: the image grows and its pixels still land where they should.
      const before = Number((await dataset(page)).scale);
      await pinch(cdp, cx, cy, 40, 120);
      await page.waitForFunction((s) => Number(document.getElementById('view').dataset.scale) > s * 1.5, before);
      await checkPixels(page, 'phone pinched');
      await step('04-pinch');
    }
    assert.equal(seen.size, n, 'every image of the series was shown');
    assert.ok(between > n, `sample points between black and white: ${between}`);
    console.log(`${name}: ${checked} pixels checked on ${n} slices`);

    // Window presets, by button and by key.
    await page.click('[data-preset=bone]');
    await page.waitForFunction(() => document.getElementById('view').dataset.center === '500');
    await checkPixels(page, `${name} bone`, [500, 2000]);
    await step('05-bone');
    await page.click('[data-preset=stroke]');
    await page.waitForFunction(() => document.getElementById('view').dataset.preset === 'stroke');
    await checkPixels(page, `${name} stroke`, [40, 40]);
    await page.click('[data-preset=subdural]');
    await page.waitForFunction(() => document.getElementById('view').dataset.preset === 'subdural');
    await checkPixels(page, `${name} subdural`, [75, 215]);
    if (name === 'desktop') {
      await page.keyboard.press('5');
      await page.waitForFunction(() => document.getElementById('view').dataset.preset === 'lung');
      await checkPixels(page, 'desktop lung (key 5)', [-600, 1500]);
      await page.keyboard.press('1');
      await page.waitForFunction(() => document.getElementById('view').dataset.preset === 'brain');
      await checkPixels(page, 'desktop brain (key 1)', [40, 80]);
      await page.keyboard.press('i');
      await page.waitForFunction(() => document.getElementById('view').dataset.invert === 'true');
      await checkPixels(page, 'desktop brain inverted', [40, 80], true);
      await page.keyboard.press('i');
      await page.waitForFunction(() => document.getElementById('view').dataset.invert === 'false');
      // Orientation labels of an axial slice (rows run to the patient's left, columns back).
      assert.deepEqual(await Promise.all(['left', 'right', 'top', 'bottom'].map((e) => page.locator(`#or-${e}`).innerText())),
        ['R', 'L', 'A', 'P']);
      // Window by dragging: width with x, level with y.
      await page.click('[data-tool=window]');
      await page.mouse.move(cx, cy);
      await page.mouse.down();
      await page.mouse.move(cx + 60, cy - 30, { steps: 4 });
      await page.mouse.up();
      await page.waitForFunction(() => document.getElementById('view').dataset.preset === 'custom');
      const d = await dataset(page);
      assert.ok(Number(d.width) > 80 && Number(d.center) < 40, `dragged window ${d.center}/${d.width}`);
      await checkPixels(page, 'desktop dragged window', [Number(d.center), Number(d.width)]);
      // Zoom by key: the pixels follow the new scale.
      const s0 = Number(d.scale);
      await page.keyboard.press('+');
      await page.waitForFunction((s) => Number(document.getElementById('view').dataset.scale) > s, s0);
      await checkPixels(page, 'desktop zoomed', [Number(d.center), Number(d.width)]);
      await step('06-window-drag-zoom');
      await page.keyboard.press('r');
      await page.waitForFunction(() => document.getElementById('view').dataset.preset === 'default');
      await checkPixels(page, 'desktop reset');
      // The help panel lists the shortcuts.
      await page.keyboard.press('?');
      await page.locator('#help').waitFor({ state: 'visible' });
      assert.match(await page.locator('#help').innerText(), /window: brain, subdural, stroke, bone, lung/);
      await step('06-help');
      await page.keyboard.press('Escape');
      await page.locator('#help').waitFor({ state: 'hidden' });
      // A length: dragged between two image points 256 columns apart on one row; Pixel
      // Spacing (pydicom) gives its true length in mm (±1 pixel spacing).
      const spacing = ct.images[(await dataset(page)).sop].spacing;
      await page.keyboard.press('m');
      const v = await dataset(page);
      const at = (col, row) => [box.x + Number(v.ox) + col * Number(v.scale), box.y + Number(v.oy) + row * Number(v.scale)];
      await page.mouse.move(...at(128, 200));
      await page.mouse.down();
      await page.mouse.move(...at(384, 200), { steps: 5 });
      await page.mouse.up();
      const label = await page.locator('#marks .mark-label').textContent();
      const mm = Number(/([\d.]+) mm/.exec(label)[1]);
      assert.ok(Math.abs(mm - 256 * spacing[1]) <= spacing[1], `length ${label}, expected ${256 * spacing[1]} mm`);
      assert.match(await page.locator('#scalebar').innerText(), /\d+ (mm|cm)/);
      await checkPixels(page, 'desktop with a length drawn'); // the line is not in the image
      await step('07-length');
      await page.keyboard.press('Delete');
      await page.waitForFunction(() => document.querySelectorAll('#marks line').length === 0);
      // Cine plays through the stack and stops.
      const from = Number((await dataset(page)).slice);
      await page.keyboard.press('c');
      await page.waitForFunction((f) => {
        const d = document.getElementById('view').dataset;
        return d.cine === 'true' && Number(d.slice) !== f && Number(d.slice) !== f + 1;
      }, from);
      await page.keyboard.press('c');
      assert.equal((await dataset(page)).cine, 'false');
    }

    // The strict CSP of the app's pages: an inline script does not run.
    const shell = await page.request.get(`${site.base}/view/${study}`);
    const csp = shell.headers()['content-security-policy'] || '';
    assert.match(csp, /default-src 'self'/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
    const inline = await page.evaluate(async () => {
      const violations = [];
      document.addEventListener('securitypolicyviolation', (e) => violations.push(e.effectiveDirective));
      const s = document.createElement('script');
      s.textContent = 'window.__inlineRan = true;';
      document.body.append(s);
      await new Promise((r) => setTimeout(r, 200));
      return { ran: window.__inlineRan === true, violations };
    });
    assert.equal(inline.ran, false, 'an inline script ran despite the CSP');
    assert.ok(inline.violations.some((v) => v.startsWith('script-src')), `violations: ${inline.violations}`);

    assert.deepEqual(errors, [], 'no script errors');

    // Logging out ends it: the viewer sends the visitor to log in again.
    await Promise.all([page.waitForURL(/\/login$/), page.click('#logout')]);
    await page.goto(`${site.base}/view/${study}`);
    await page.waitForURL(/\/login\?next=/);
    await step('08-logged-out');
    await context.close();
  });
}

test('desktop: the worklist shows a new study without a reload; filters and sort', async () => {
  const context = await browser.newContext(VIEWPORTS.desktop);
  const page = await context.newPage();
  await page.goto(`${site.base}/worklist`);
  await login(page, 'alice');
  await page.locator(`tr.study[data-uid="${study}"]`).waitFor();
  await page.evaluate(() => { window.__sameDocument = true; });
  // The event stream is open before the new study arrives.
  await page.waitForFunction(() => !document.getElementById('wl-status').classList.contains('offline'));
  await page.waitForTimeout(300);
  const second = synth(join(site.tmp, 'ct2'), 8, 3);
  const uid2 = Object.values(second.images)[0].study;
  assert.notEqual(uid2, study);
  site.import(second.dir);
  await page.locator(`tr.study[data-uid="${uid2}"]`).waitFor({ timeout: 15000 });
  assert.equal(await page.evaluate(() => window.__sameDocument), true, 'the page was not reloaded');
  await shot(page, 'desktop-09-live-update');
  // Filters (kept in the URL) and sort.
  const second0 = Object.values(second.images)[0];
  await page.fill('input[name=patientName]', second0.patient_name.split('^')[0].slice(0, 3).toLowerCase());
  await page.click('form.filters button[type=submit]');
  await page.waitForFunction((u) => [...document.querySelectorAll('tr.study')].map((r) => r.dataset.uid).join() === u, uid2);
  assert.match(page.url(), /patientName=/);
  await page.fill('input[name=patientName]', '');
  await page.selectOption('select[name=modality]', 'MR');
  await page.locator('#worklist .empty').waitFor();
  await page.selectOption('select[name=modality]', '');
  await page.locator(`tr.study[data-uid="${study}"]`).waitFor();
  await page.click('th button[data-sort=name]');
  assert.equal(await page.locator('select[name=sort]').inputValue(), 'name');
  await page.locator('#worklist[data-sort=name]:not([aria-busy])').waitFor();
  const names = await page.locator('tr.study a.open').allInnerTexts();
  assert.deepEqual(names, [...names].sort((a, b) => a.localeCompare(b)));
  await page.selectOption('select[name=sort]', 'date-asc');
  await page.locator('#worklist[data-sort=date-asc]:not([aria-busy])').waitFor();
  const dates = await page.locator('tr.study td[data-label=Date]').allInnerTexts();
  assert.deepEqual(dates, [...dates].sort());
  // Paging: 25 a page, each page asked of the server (docs/web.md, "Worklist").
  const many = synth(join(site.tmp, 'many'), 21, 1, 26);
  const total = new Set(Object.values(many.images).map((i) => i.study)).size + 2;
  site.import(many.dir);
  await page.waitForFunction((t) => document.getElementById('wl-status').textContent.startsWith(`${t} studies`), total, { timeout: 20000 });
  assert.equal(await page.locator('tr.study').count(), 25);
  assert.match(await page.locator('nav.pager').innerText(), new RegExp(`Studies 1–25 of ${total}`));
  await page.click('nav.pager button:has-text("Next")');
  await page.locator('nav.pager .pager-status', { hasText: `Studies 26–${total} of ${total}` }).waitFor();
  assert.equal(await page.locator('tr.study').count(), total - 25);
  await shot(page, 'desktop-09b-paging');
  await context.close();
});

test('desktop, slow link: a slice late in a request in flight comes first when jumped to', async () => {
  const context = await browser.newContext(VIEWPORTS.desktop);
  const page = await context.newPage();
  await page.goto(`${site.base}/worklist`);
  await page.waitForURL(/\/login/);
  await login(page, 'alice');
  // 4 Mbit/s: each 512×512 16-bit frame takes about a second, the 24 of the study 25 s.
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 20, downloadThroughput: 4e6 / 8, uploadThroughput: 4e6 / 8 });
  const requests = [];
  context.on('request', (r) => requests.push(r.url()));
  await page.goto(`${site.base}/view/${study}`);
  // The middle slice's raw frame in: the other 23 follow in the same request, nearest first,
  // slice 1 last.
  await page.waitForFunction(() => Number(document.getElementById('view')?.dataset.loaded) >= 1, null, { timeout: 60000 });
  const batches = () => requests.filter((u) => /\/frames\?instances=/.test(u))
    .map((u) => decodeURIComponent(new URL(u).searchParams.get('instances')).split(',').map((x) => ct.images[x.split(':')[0]].number));
  assert.equal(batches().length, 1, 'one request for all 24 slices');
  assert.equal(batches()[0].at(-1), 1);
  await page.keyboard.press('Home');
  const t = Date.now();
  await waitSlice(page, 1);
  const ms = Date.now() - t;
  const loaded = Number((await dataset(page)).loaded);
  assert.ok(loaded < 16, `slice 1 came before most of the others (${loaded} of 24 loaded, ${ms} ms after the jump)`);
  // The request in flight was cancelled and a new one asked for slice 1 first.
  assert.ok(batches().length >= 2);
  assert.equal(batches()[1][0], 1, `second request: ${batches()[1].slice(0, 5)}`);
  await context.close();
});

test('desktop: where the series frames request is refused (an older server), frames come one per request', async () => {
  const context = await browser.newContext(VIEWPORTS.desktop);
  // The worker's requests too: as an older Vesalius would answer the unknown route.
  await context.route(/\/frames\?instances=/, (r) => r.fulfill({ status: 404, contentType: 'application/json', body: '{"error":"not-found","message":"no such route"}' }));
  const page = await context.newPage();
  const requests = [];
  context.on('request', (r) => requests.push(r.url()));
  await page.goto(`${site.base}/worklist`);
  await page.waitForURL(/\/login/);
  await login(page, 'alice');
  await page.goto(`${site.base}/view/${study}`);
  await page.waitForFunction(() => { const d = document.getElementById('view')?.dataset; return d && d.slices && d.loaded === d.slices; }, null, { timeout: 30000 });
  const n = Number((await dataset(page)).slices);
  assert.equal(requests.filter((u) => /\/frames\?instances=/.test(u)).length, 1, 'asked once');
  assert.ok(requests.filter((u) => /\/instances\/[0-9.]+\/frames\/1$/.test(u)).length >= n, 'then every frame on its own');
  await waitSlice(page, 13);
  await checkPixels(page, 'fallback, slice 13');
  await context.close();
});

test('desktop: another organisation\'s user sees neither the study nor its images', async () => {
  const context = await browser.newContext(VIEWPORTS.desktop);
  const page = await context.newPage();
  await page.goto(`${site.base}/worklist`);
  await login(page, 'bob');
  await page.waitForSelector('#worklist .empty, #worklist table');
  assert.equal(await page.locator(`tr.study[data-uid="${study}"]`).count(), 0);
  const failed = [];
  page.on('requestfailed', (r) => failed.push(`${r.url()}: ${r.failure()?.errorText}`));
  page.on('response', (r) => { if (r.status() >= 500) failed.push(`${r.url()}: ${r.status()}`); });
  await page.goto(`${site.base}/view/${study}`);
  await page.waitForFunction(() => document.getElementById('view')?.dataset.state === 'error'
    || document.querySelector('#app > .error'));
  assert.equal(await page.locator('#app > .error').count(), 0,
    `the app failed: ${await page.locator('#app').innerText()} ${failed.join('; ')}`);
  assert.match(await page.locator('.banners').innerText(), /No such study/);
  await shot(page, 'desktop-10-other-org');
  await context.close();
});

test('desktop: an IHE IID launch opens the study and checks the patient', async () => {
  const context = await browser.newContext(VIEWPORTS.desktop);
  const page = await context.newPage();
  const pid = Object.values(ct.images)[0].patient_id;
  const url = `${site.base}/viewer?requestType=STUDY&studyUID=${study}&patientID=`;
  await page.goto(url + pid);
  await page.waitForURL(/\/login\?next=%2Fviewer%3F/);
  await login(page, 'alice', /\/viewer\?/);
  await page.waitForFunction(() => document.getElementById('view')?.dataset.state === 'raw');
  assert.doesNotMatch(await page.locator('.banners').innerText(), /Warning/);
  await page.goto(`${url}SOMEONE-ELSE`);
  await page.locator('.banner.error').waitFor();
  assert.match(await page.locator('.banners').innerText(), /belongs to patient ID/);
  await shot(page, 'desktop-11-iid-wrong-patient');
  await context.close();
});

test('desktop: a study held at a peer site is read through this site; a stroke arrival stands out', async () => {
  const spoke = await Site.start('spoke');
  try {
    site.peerWith(spoke);
    const remote = synth(join(site.tmp, 'remote'), 11, 6);
    const uid = Object.values(remote.images)[0].study;
    spoke.import(remote.dir);
    const context = await browser.newContext(VIEWPORTS.desktop);
    const page = await context.newPage();
    const requests = [];
    page.on('request', (r) => requests.push(r.url()));
    await page.goto(`${site.base}/worklist`);
    await login(page, 'alice');
    const row = page.locator(`tr.study[data-uid="${uid}"]`);
    await row.waitFor();
    assert.equal(await row.getAttribute('data-site'), 'spoke');
    assert.match(await row.innerText(), /spoke/);
    await shot(page, 'desktop-12-remote-worklist');
    await Promise.all([page.waitForURL(/\/view\/.*\?peer=spoke$/), row.locator('a.open').click()]);
    await page.waitForFunction(() => {
      const d = document.getElementById('view')?.dataset;
      return d && d.slices && d.loaded === d.slices && d.state === 'raw';
    }, null, { timeout: 30000 });
    assert.ok(requests.some((u) => u.includes('/dicom-web/peers/spoke/') && /\/frames\/1$/.test(u)), 'frames came through the proxy');
    // The same pixel check, against the spoke's images read with pydicom.
    const saved = ct;
    ct = remote;
    try {
      await page.keyboard.press('Home');
      await waitSlice(page, 1);
      await checkPixels(page, 'remote slice 1');
      await page.keyboard.press('4');
      await page.waitForFunction(() => document.getElementById('view').dataset.preset === 'bone');
      await checkPixels(page, 'remote bone', [500, 2000]);
    } finally {
      ct = saved;
    }
    assert.match(await page.locator('#ov-tr').innerText(), /at spoke/);
    await shot(page, 'desktop-13-remote-viewer');

    // A stroke route at the spoke sends the next CT head here at priority 100: the open
    // worklist raises the alert and shows the study in red, first, without a reload.
    await page.goto(`${site.base}/worklist`);
    await page.locator(`tr.study[data-uid="${study}"]`).waitFor();
    await page.waitForFunction(() => !document.getElementById('wl-status').classList.contains('offline'));
    await page.evaluate(() => { window.__sameDocument = true; });
    spoke.admin('route', 'add', 'stroke', '--org', 'default', '--to', `peer:${site.name}`, '--modality', 'CT', '--priority', '100');
    await new Promise((r) => setTimeout(r, 2500)); // the spoke reloads its routes every 2 s
    const urgent = synth(join(site.tmp, 'urgent'), 12, 3);
    const urgentUid = Object.values(urgent.images)[0].study;
    spoke.import(urgent.dir);
    const alert = page.locator('.alert.urgent');
    await alert.waitFor({ timeout: 60000 });
    assert.match(await alert.innerText(), /Stroke-priority study arrived from spoke \(3 images\)/);
    const urgentRow = page.locator(`tr.study.urgent[data-uid="${urgentUid}"]`);
    await urgentRow.waitFor({ timeout: 15000 });
    assert.match(await urgentRow.innerText(), /STROKE/);
    assert.equal(await page.locator('tr.study').first().getAttribute('data-uid'), urgentUid, 'the stroke study comes first');
    assert.equal(await page.evaluate(() => window.__sameDocument), true, 'the page was not reloaded');
    await shot(page, 'desktop-14-stroke-arrival');
    // The status filter: the delivered study is "received complete", the local one is not.
    const local = page.locator(`tr.study[data-uid="${study}"]`);
    await page.selectOption('select[name=status]', 'complete');
    await urgentRow.waitFor();
    await local.waitFor({ state: 'detached' });
    assert.match(page.url(), /status=complete/);
    await page.selectOption('select[name=status]', 'here');
    await local.waitFor();
    await urgentRow.waitFor({ state: 'detached' });
    await page.selectOption('select[name=status]', 'arriving');
    await page.locator('#worklist .empty').waitFor();
    await page.selectOption('select[name=status]', '');
    await urgentRow.waitFor();
    await Promise.all([page.waitForURL(/\/view\//), alert.locator('a').click()]);
    await page.waitForFunction(() => document.getElementById('view')?.dataset.state === 'raw');
    await context.close();
  } finally {
    await spoke.stop();
  }
});
