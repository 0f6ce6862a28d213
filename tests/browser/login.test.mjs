// Logging in and the first start inside the app (issue 6): the set-up link a fresh server prints
// opens the app's set-up screen (first administrator: username, password, confirmation), which
// logs in and lands in the admin console, where this site administrator creates an
// organisation; the link then works no more. The login screen: a wrong password said in the
// page, keyboard only, labelled fields, `next=` back to where the user was and never to another
// site, logging out back to it. Desktop and phone (390×844) viewports, each on a fresh server.
// Real `vesalius serve`, Debian's Chromium (playwright-core).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { ARTIFACTS, PASSWORD, Site, VIEWPORTS, launch } from './site.mjs';

let browser;
const sites = [];

before(async () => {
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close();
  for (const s of sites) await s.stop();
});

async function shot(page, name) {
  await page.screenshot({ path: join(ARTIFACTS, `login-${name}.png`), fullPage: true });
}

/** Whether the page fits the viewport's width (no sideways scrolling). */
function fits(page) {
  return page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1);
}

for (const [kind, viewport] of Object.entries(VIEWPORTS)) {
  test(`${kind}: first start in the app, the site administrator creates an organisation, logs out and in`, async () => {
    const site = await Site.start(`login-${kind}`);
    sites.push(site);
    assert.ok(site.setupUrl, 'the server printed its set-up link');
    const ctx = await browser.newContext(viewport);
    const page = await ctx.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    try {
      // A wrong token: a clear message, no form.
      await page.goto(site.setupUrl.replace(/token=.*/, 'token=not-the-token'));
      const alert = page.locator('#auth-error');
      await alert.waitFor();
      assert.match(await alert.innerText(), /not valid/);
      assert.equal(await page.locator('form').count(), 0);

      // The printed link: the app's set-up screen, the token gone from the address bar.
      await page.goto(site.setupUrl);
      await page.getByRole('heading', { name: 'Set up Vesalius' }).waitFor();
      assert.equal(new URL(page.url()).search, '', 'the token is not left in the address bar');
      assert.equal(await page.locator('header.bar .brand').innerText(), 'Vesalius', 'inside the app shell');
      const username = page.getByLabel('Administrator username');
      assert.equal(await username.inputValue(), 'admin');
      await username.fill('chief');
      await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
      await page.getByLabel('Password again').fill(`${PASSWORD}!`);
      await page.getByRole('button', { name: 'Create the administrator' }).click();
      assert.match(await alert.innerText(), /The two passwords differ/);
      assert.equal(await page.getByLabel('Password again').getAttribute('aria-invalid'), 'true');
      assert.ok(await fits(page), 'the set-up screen fits the viewport');
      await shot(page, `${kind}-setup`);
      await page.getByLabel('Password again').fill(PASSWORD);
      await Promise.all([page.waitForURL(/\/admin$/), page.getByRole('button', { name: 'Create the administrator' }).click()]);
      await page.locator('#who-name', { hasText: 'chief' }).waitFor();

      // The site administrator creates an organisation in the console.
      await page.goto(`${site.base}/admin/orgs`);
      const sec = page.locator('section', { has: page.getByRole('heading', { name: 'Organisations' }) }).first();
      const create = page.locator('form[aria-label="New organisation"]');
      await create.waitFor();
      await create.getByLabel('Id (lower-case letters, digits, -)').fill(`east-${kind}`);
      await create.getByLabel('Name').fill('East Hospital');
      await create.locator('button[type=submit]').click();
      await sec.locator('table[aria-label=Organisations] tr', { hasText: 'East Hospital' }).waitFor();
      assert.ok(JSON.parse(site.admin('org', 'list', '--json')).some((o) => o.id === `east-${kind}`),
        'the organisation exists on the server');
      await shot(page, `${kind}-site-admin-org`);

      // The link works once.
      await page.goto(site.setupUrl);
      await alert.waitFor();
      assert.match(await alert.innerText(), /used already/);

      // Log out: back to the app's login screen.
      await page.goto(`${site.base}/worklist`);
      await page.locator('#logout').waitFor();
      await Promise.all([page.waitForURL(/\/login$/), page.click('#logout')]);
      await page.getByRole('heading', { name: 'Log in' }).waitFor();
      assert.equal(await page.locator('#oidc-login').count(), 0, 'no OpenID Connect button without a provider');

      // A wrong password: said in the page, fields marked, focus on the password again.
      await page.goto(`${site.base}/login?next=${encodeURIComponent('/alerts')}`);
      await page.getByLabel('Username').fill('chief');
      await page.getByLabel('Password').fill('not the password');
      await page.getByRole('button', { name: 'Log in' }).click();
      await alert.waitFor();
      assert.match(await alert.innerText(), /username or password is wrong/);
      assert.equal(await page.getByLabel('Password').getAttribute('aria-invalid'), 'true');
      assert.equal(await page.evaluate(() => document.activeElement?.id), 'password');
      assert.ok(await fits(page), 'the login screen fits the viewport');
      await shot(page, `${kind}-login-wrong`);

      // Keyboard only: the username has the focus; Tab, Enter; back to `next`.
      await page.goto(`${site.base}/login?next=${encodeURIComponent('/alerts')}`);
      await page.getByLabel('Username').waitFor();
      assert.equal(await page.evaluate(() => document.activeElement?.id), 'username');
      await page.keyboard.type('chief');
      await page.keyboard.press('Tab');
      assert.equal(await page.evaluate(() => document.activeElement?.id), 'password');
      await page.keyboard.type(PASSWORD);
      await Promise.all([page.waitForURL(/\/alerts$/), page.keyboard.press('Enter')]);

      // `next` naming another site is not followed.
      await page.click('#logout');
      await page.waitForURL(/\/login$/);
      await page.goto(`${site.base}/login?next=${encodeURIComponent('//evil.example/x')}`);
      await page.getByLabel('Username').fill('chief');
      await page.getByLabel('Password').fill(PASSWORD);
      await Promise.all([page.waitForURL(`${site.base}/worklist`), page.getByRole('button', { name: 'Log in' }).click()]);
      assert.deepEqual(errors, [], 'no script error');
    } finally {
      await ctx.close();
    }
  });
}

test('an organisation\'s administrator logged in through the app may not create organisations', async () => {
  const site = sites[0];
  site.user('default', 'olga', 'admin');
  const ctx = await browser.newContext(VIEWPORTS.desktop);
  const page = await ctx.newPage();
  try {
    await page.goto(`${site.base}/admin/orgs`);
    await page.waitForURL(/\/login\?next=%2Fadmin%2Forgs$/);
    await page.getByLabel('Username').fill('olga');
    await page.getByLabel('Password').fill(PASSWORD);
    await Promise.all([page.waitForURL(/\/admin\/orgs$/), page.getByRole('button', { name: 'Log in' }).click()]);
    await page.getByText(/vesalius admin org create/).waitFor();
    assert.equal(await page.locator('form[aria-label="New organisation"]').count(), 0);
    const status = await page.evaluate(async () => {
      const me = await (await fetch('/api/v1/auth/me')).json();
      const r = await fetch('/api/v1/orgs', {
        method: 'POST', headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': me.csrf },
        body: JSON.stringify({ id: 'sneaky' }),
      });
      return [r.status, (await r.json()).error];
    });
    assert.deepEqual(status, [403, 'forbidden']);
  } finally {
    await ctx.close();
  }
});

test('"Keep me signed in": without it the cookie ends with the browser, with it it lasts the server\'s 30 days', async () => {
  const site = sites[0];
  site.user('default', 'kim');
  const ctx = await browser.newContext(VIEWPORTS.phone);
  const page = await ctx.newPage();
  const session = async () => (await ctx.cookies(site.base)).find((c) => c.name === 'vesalius_session');
  try {
    await page.goto(`${site.base}/login`);
    const keep = page.getByLabel('Keep me signed in');
    await keep.waitFor();
    assert.equal(await keep.isChecked(), false, 'off unless ticked');
    assert.match(await page.locator('#remember-hint').innerText(), /For 30 days on this device/);
    await page.getByLabel('Username').fill('kim');
    await page.getByLabel('Password').fill(PASSWORD);
    await Promise.all([page.waitForURL(/\/worklist$/), page.getByRole('button', { name: 'Log in' }).click()]);
    assert.equal((await session()).expires, -1, 'a browser-session cookie');
    await Promise.all([page.waitForURL(/\/login$/), page.click('#logout')]);

    await page.getByLabel('Username').fill('kim');
    await page.getByLabel('Password').fill(PASSWORD);
    await page.getByLabel('Keep me signed in').check();
    await shot(page, 'phone-remember');
    await Promise.all([page.waitForURL(/\/worklist$/), page.getByRole('button', { name: 'Log in' }).click()]);
    const days = ((await session()).expires * 1000 - Date.now()) / 86_400_000;
    assert.ok(days > 29.9 && days <= 30, `a cookie for 30 days: ${days}`);
    // The server's session lasts as long: it answers as the user.
    const me = await page.evaluate(async () => (await fetch('/api/v1/auth/me')).json());
    assert.equal(me.actor.name, 'kim');
  } finally {
    await ctx.close();
  }
});
