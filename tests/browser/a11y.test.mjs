// Accessibility checks of the app's pages in Debian's Chromium (issue 6: "labels for screen
// readers, sufficient contrast"): on the worklist, the viewer, the admin console, the login
// page and a guest upload page, desktop and phone,
// - every visible text has a contrast ratio against its background of at least 4.5:1
//   (3:1 for large text: 24 px, or 18.66 px bold), WCAG 2.2 success criterion 1.4.3, computed
//   with WCAG's relative luminance from the computed colours (backgrounds composed up the tree);
// - every visible control (button, input, select, textarea, link) has an accessible name
//   (Chromium's accessibility tree via the DevTools protocol, as a screen reader gets it);
// - the page has a main landmark and one h1 or a labelled region, and images have alt text.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { ARTIFACTS, Site, synth, launch, VIEWPORTS, login } from './site.mjs';


let site;
let browser;
let study;
let uploadUrl;

before(async () => {
  site = await Site.start();
  site.user('default', 'ada', 'admin');
  const ct = synth(join(site.tmp, 'ct'), 9, 4);
  site.import(ct.dir);
  study = Object.values(ct.images)[0].study;
  const r = await fetch(`${site.base}/api/v1/upload-links`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${site.token}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ label: 'Referrals', max_bytes: 100e6 }),
  });
  assert.equal(r.status, 201);
  uploadUrl = (await r.json()).url;
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close();
  if (site) await site.stop();
});

/** Text elements whose contrast is below the WCAG 2.2 AA minimum (run in the page). */
function lowContrast() {
  const parse = (c) => {
    const m = c.match(/rgba?\(([^)]+)\)/);
    if (!m) return null;
    const [r, g, b, a = 1] = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
    return { r, g, b, a };
  };
  const over = (top, under) => ({
    r: top.r * top.a + under.r * (1 - top.a),
    g: top.g * top.a + under.g * (1 - top.a),
    b: top.b * top.a + under.b * (1 - top.a),
    a: 1,
  });
  const lum = ({ r, g, b }) => {
    const f = (v) => { const s = v / 255; return s <= 0.04045 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const cs = getComputedStyle(e);
      if (cs.backgroundImage !== 'none') return null; // gradients and images: not judged here
      const c = parse(cs.backgroundColor);
      if (c && c.a > 0) { layers.push(c); if (c.a >= 1) break; }
    }
    let bg = { r: 255, g: 255, b: 255, a: 1 };
    for (const c of layers.reverse()) bg = over(c, bg);
    return bg;
  };
  const bad = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const seen = new Set();
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement;
    if (!el || seen.has(el) || !n.textContent.trim()) continue;
    seen.add(el);
    if (el.closest('[hidden], [aria-hidden="true"], canvas, svg, noscript, script, style')) continue;
    const r = el.getBoundingClientRect();
    const cs = getComputedStyle(el);
    if (r.width === 0 || r.height === 0 || cs.visibility === 'hidden' || Number(cs.opacity) === 0) continue;
    if (el.closest('button:disabled, input:disabled, select:disabled')) continue; // WCAG exempts inactive controls
    let op = 1;
    for (let e = el; e; e = e.parentElement) op *= Number(getComputedStyle(e).opacity);
    const bg = background(el);
    const fgc = parse(cs.color);
    if (!bg || !fgc) continue;
    const fg = over({ ...fgc, a: fgc.a * op }, bg);
    const [l1, l2] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    const ratio = (l1 + 0.05) / (l2 + 0.05);
    const size = parseFloat(cs.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(cs.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) {
      bad.push(`${ratio.toFixed(2)}:1 "${n.textContent.trim().slice(0, 40)}" <${el.tagName.toLowerCase()} class="${el.className}"> ${cs.color} on rgb(${Math.round(bg.r)},${Math.round(bg.g)},${Math.round(bg.b)})`);
    }
  }
  return bad;
}

/** Visible controls without an accessible name, from Chromium's accessibility tree. */
async function unnamed(page) {
  const cdp = await page.context().newCDPSession(page);
  const { nodes } = await cdp.send('Accessibility.getFullAXTree');
  const roles = new Set(['button', 'textbox', 'combobox', 'searchbox', 'checkbox', 'radio', 'link', 'slider', 'spinbutton', 'listbox', 'switch', 'tab']);
  return nodes
    .filter((n) => !n.ignored && roles.has(n.role?.value) && !(n.name?.value || '').trim())
    .map((n) => `${n.role.value} (backend node ${n.backendDOMNodeId})`);
}

async function check(page, label) {
  const bad = await page.evaluate(lowContrast);
  assert.deepEqual(bad, [], `${label}: text below the WCAG AA contrast minimum`);
  assert.deepEqual(await unnamed(page), [], `${label}: controls without an accessible name`);
  const structure = await page.evaluate(() => ({
    main: document.querySelectorAll('main, [role=main]').length,
    imgsWithoutAlt: [...document.querySelectorAll('img')].filter((i) => !i.hasAttribute('alt')).length,
    lang: document.documentElement.lang,
  }));
  assert.ok(structure.main >= 1, `${label}: a main landmark`);
  assert.equal(structure.imgsWithoutAlt, 0, `${label}: every image has alt text`);
  assert.ok(structure.lang, `${label}: the page says its language`);
  await page.screenshot({ path: join(ARTIFACTS, `a11y-${label.replaceAll(/[^a-z0-9]+/gi, '-')}.png`) });
}

for (const [name, opts] of Object.entries(VIEWPORTS)) {
  test(`${name}: contrast, names and landmarks of the login, worklist, viewer, admin and upload pages`, async () => {
    const ctx = await browser.newContext(opts);
    const page = await ctx.newPage();
    await page.goto(`${site.base}/worklist`);
    await page.waitForURL(/\/login/);
    await check(page, `${name} login`);
    await login(page, 'ada');
    await page.locator(`tr[data-uid="${study}"]`).waitFor();
    await check(page, `${name} worklist`);
    await page.goto(`${site.base}/view/${study}`);
    await page.waitForFunction(() => document.getElementById('view')?.dataset.state === 'raw', null, { timeout: 30000 });
    await check(page, `${name} viewer`);
    await page.keyboard.press('?');
    await check(page, `${name} viewer help`);
    await page.goto(`${site.base}/admin`);
    await page.locator('main h1, main h2').first().waitFor();
    await page.waitForTimeout(500);
    await check(page, `${name} admin`);
    await ctx.close();
    const guest = await browser.newContext(opts);
    const gp = await guest.newPage();
    await gp.goto(new URL(uploadUrl, site.base).href);
    await gp.locator('main').waitFor();
    await gp.waitForTimeout(500);
    await check(gp, `${name} upload`);
    await guest.close();
  });
}

test('the checks themselves: they catch low contrast and a nameless control', async () => {
  const page = await browser.newPage();
  await page.setContent(`<html lang="en"><body style="background:#0d1117"><main>
    <p id="ok" style="color:#e6edf3">readable</p>
    <p style="color:#30363d">too dark on dark</p>
    <p style="color:#9aa7b4;opacity:.5">faded by opacity</p>
    <button style="color:#fff;background:#161b22"></button>
  </main></body></html>`);
  const bad = await page.evaluate(lowContrast);
  assert.equal(bad.length, 2, bad.join('\n'));
  assert.ok(bad.some((b) => b.includes('too dark')) && bad.some((b) => b.includes('faded')));
  assert.equal((await unnamed(page)).length, 1);
  await page.close();
});
