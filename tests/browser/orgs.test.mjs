// Issue 6: a user of two organisations (a radiologist reading for two trusts of one hub) logs
// in, sees the first organisation's study in the worklist, switches organisation in the
// header, and then sees the other organisation's study and not the first's; opening the first
// one's study by its address is answered like a study that does not exist. The switcher is
// labelled and fits a phone's width. Desktop and phone viewports, a user each (the next login
// starts in the organisation last switched to). Real `vesalius serve`, Debian's Chromium.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { ARTIFACTS, Site, VIEWPORTS, launch, login, synth } from './site.mjs';
import { lowContrast, unnamed } from './a11y.mjs';

let site;
let browser;
const uid = {};

before(async () => {
  site = await Site.start('orgs');
  site.admin('org', 'create', 'south', '--name', 'South Trust');
  site.admin('org', 'create', 'east', '--name', 'East Trust');
  for (const kind of Object.keys(VIEWPORTS)) {
    site.user('default', `reader-${kind}`, 'clinician');
    site.admin('user', 'join', `reader-${kind}`, 'south', '--role', 'radiographer');
  }
  // One study in each organisation (different seeds: different patients and UIDs).
  for (const [org, seed] of [['default', 31], ['south', 32]]) {
    const s = synth(join(site.tmp, `ct-${org}`), seed, 2);
    site.import(s.dir, org);
    uid[org] = Object.values(s.images)[0].study;
  }
  assert.notEqual(uid.default, uid.south);
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close();
  if (site) await site.stop();
});

const row = (page, study) => page.locator(`tr.study[data-uid="${study}"]`);

/** Waits for the worklist's answer (a table or its empty message). */
async function listed(page) {
  await page.waitForSelector('#worklist .empty, #worklist table');
}

for (const [kind, viewport] of Object.entries(VIEWPORTS)) {
  test(`${kind}: switching organisation in the header shows the other organisation's studies only`, async () => {
    const ctx = await browser.newContext(viewport);
    const page = await ctx.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    try {
      await page.goto(`${site.base}/worklist`);
      await login(page, `reader-${kind}`);
      await listed(page);
      const sw = page.getByLabel('Organisation');
      await sw.waitFor();
      assert.equal(await sw.inputValue(), 'default', 'the first login acts in the first organisation');
      const options = await sw.locator('option').allInnerTexts();
      assert.deepEqual(options, ['default (clinician)', 'South Trust (radiographer)']);
      await row(page, uid.default).waitFor();
      assert.equal(await row(page, uid.south).count(), 0, "south's study is not listed in default");
      assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1),
        'the header with its switcher fits the viewport');
      assert.deepEqual(await page.evaluate(lowContrast), [], 'contrast (WCAG AA) with the switcher');
      assert.deepEqual(await unnamed(page), [], 'every control named, the switcher included');
      await page.screenshot({ path: join(ARTIFACTS, `orgs-${kind}-default.png`) });

      // Switch in the header: the page loads again, for south.
      await Promise.all([
        page.waitForResponse((r) => r.url().endsWith('/api/v1/auth/session/org') && r.status() === 200),
        sw.selectOption('south'),
      ]);
      await page.waitForLoadState('load');
      await listed(page);
      await row(page, uid.south).waitFor();
      assert.equal(await row(page, uid.default).count(), 0, "default's study is gone from the list");
      assert.equal(await page.getByLabel('Organisation').inputValue(), 'south');
      await page.screenshot({ path: join(ARTIFACTS, `orgs-${kind}-south.png`) });

      // The first organisation's study by its address: like a study that does not exist.
      await page.goto(`${site.base}/view/${uid.default}`);
      await page.waitForFunction(() => document.getElementById('view')?.dataset.state === 'error'
        || document.querySelector('#app > .error') || document.querySelector('.banner.error'));
      assert.match(await page.locator('.banners').innerText(), /No such study/);
      // South's own study opens.
      await page.goto(`${site.base}/view/${uid.south}`);
      await page.waitForFunction(() => ['raw', 'rendered'].includes(document.getElementById('view')?.dataset.state),
        null, { timeout: 30000 });

      // Switching from the viewer goes back to the worklist, here to default again.
      await Promise.all([page.waitForURL(/\/worklist$/), page.getByLabel('Organisation').selectOption('default')]);
      await listed(page);
      await row(page, uid.default).waitFor();
      assert.equal(await row(page, uid.south).count(), 0);
      assert.deepEqual(errors, [], 'no script errors');
    } finally {
      await ctx.close();
    }
  });
}

test('desktop: the next login starts in the organisation last switched to; a user of one has no switcher', async () => {
  const ctx = await browser.newContext(VIEWPORTS.desktop);
  const page = await ctx.newPage();
  try {
    await page.goto(`${site.base}/worklist`);
    await login(page, 'reader-desktop');
    await listed(page);
    const sw = page.getByLabel('Organisation');
    await Promise.all([page.waitForLoadState('load'), sw.selectOption('south')]);
    await row(page, uid.south).waitFor();
    await Promise.all([page.waitForURL(/\/login$/), page.click('#logout')]);
    await page.goto(`${site.base}/worklist`);
    await login(page, 'reader-desktop');
    await listed(page);
    assert.equal(await page.getByLabel('Organisation').inputValue(), 'south');
    await row(page, uid.south).waitFor();

    site.user('default', 'single', 'clinician');
    await Promise.all([page.waitForURL(/\/login$/), page.click('#logout')]);
    await page.goto(`${site.base}/worklist`);
    await login(page, 'single');
    await listed(page);
    assert.equal(await page.locator('#org-switch').count(), 0);
    assert.match(await page.locator('#who-name').innerText(), /single · default \(clinician\)/);
  } finally {
    await ctx.close();
  }
});

test('desktop: a site administrator adds a user to an organisation in the console and removes them', async () => {
  site.admin('user', 'create', '--org', 'default', '--role', 'admin', '--username', 'chief', '--password-env', 'VES_PW', '--site-admin');
  const ctx = await browser.newContext(VIEWPORTS.desktop);
  const page = await ctx.newPage();
  page.on('dialog', (d) => d.accept());
  const memberships = (name) => JSON.parse(site.admin('user', 'list', '--json'))
    .find((u) => u.username === name).memberships.map((m) => `${m.role} in ${m.org}`).sort();
  try {
    await page.goto(`${site.base}/admin/users`);
    await login(page, 'chief', /\/admin\/users$/);
    const user = page.locator('table[aria-label=Users] tr', { has: page.locator('strong', { hasText: /^reader-phone$/ }) });
    await user.waitFor();
    await user.getByLabel('Organisation to add reader-phone to').selectOption('east');
    await user.getByLabel('Role of reader-phone there').selectOption('referrer');
    await user.getByRole('button', { name: 'Add to organisation' }).click();
    await user.locator('button', { hasText: 'Remove from east' }).waitFor();
    assert.match(await user.innerText(), /referrer in east/);
    assert.deepEqual(memberships('reader-phone'), ['clinician in default', 'radiographer in south', 'referrer in east'].sort());
    await page.screenshot({ path: join(ARTIFACTS, 'orgs-console-joined.png'), fullPage: true });

    await user.getByRole('button', { name: 'Remove from east' }).click();
    await page.waitForFunction(() => ![...document.querySelectorAll('table[aria-label=Users] button')]
      .some((b) => b.textContent === 'Remove from east'));
    assert.deepEqual(memberships('reader-phone'), ['clinician in default', 'radiographer in south'].sort());
    // A user of one organisation is not offered to leave it.
    const single = page.locator('table[aria-label=Users] tr', { has: page.locator('strong', { hasText: /^single$/ }) });
    assert.equal(await single.locator('button', { hasText: /^Remove from/ }).count(), 0);
  } finally {
    await ctx.close();
  }
});
