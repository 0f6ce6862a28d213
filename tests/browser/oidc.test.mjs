// Logging in with OpenID Connect by clicking through Chromium (issue 6 "Login (local and OpenID
// Connect)"): a real OpenID Provider (npm `oidc-provider`, a certified implementation, run by
// tests/interop/oidc/provider.mjs with its development login and consent forms) and the real
// `vesalius serve` configured for it. A user opens a study's viewer address without a session,
// lands on the app's login screen, presses the provider's button, signs in and consents at the
// provider and comes back to the viewer of that study, logged in as the local user the verified
// e-mail address linked; an identity no local user matches is refused with a page that says so
// and no session. tests/interop/test_oidc.py covers the protocol edges with an HTTP client.
// Needs node and `npm ci` in tests/interop/oidc (scripts/install-deps test does both).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { ARTIFACTS, ROOT, Site, VIEWPORTS, launch, synth } from './site.mjs';

const OIDC_DIR = join(ROOT, 'tests/interop/oidc');
const CLIENT_ID = 'vesalius';
const CLIENT_SECRET = 'browser-client-secret-0123456789';
const LABEL = "St Mary's login";

let browser;
let site;
let provider;
let study;
let issuer;
let tmp;

/** A free loopback port: the redirect URL registered at the provider names Vesalius' port. */
function freePort() {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.on('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => ok(port));
    });
  });
}

/** Starts provider.mjs; resolves to its issuer once it listens. */
function startProvider(env) {
  provider = spawn(process.execPath, [join(OIDC_DIR, 'provider.mjs')], {
    cwd: OIDC_DIR, env: { ...process.env, NODE_ENV: 'development', ...env }, stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error('the provider did not start in 30 s')), 30000);
    createInterface({ input: provider.stdout }).on('line', (line) => {
      if (line.startsWith('{')) { clearTimeout(timer); ok(JSON.parse(line).issuer); }
    });
    provider.on('exit', (code) => fail(new Error(`the provider exited (${code})`)));
  });
}

before(async () => {
  if (!existsSync(join(OIDC_DIR, 'node_modules/oidc-provider'))) {
    throw new Error('tests/interop/oidc/node_modules missing: run scripts/install-deps test');
  }
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const redirect = `${base}/api/v1/auth/oidc/callback`;
  tmp = mkdtempSync(join(tmpdir(), 'vesalius-oidc-'));
  const accounts = join(tmp, 'accounts.json');
  writeFileSync(accounts, JSON.stringify({
    alice: { email: 'alice@example.org', email_verified: true, name: 'Dr Alice' },
    stranger: { email: 'stranger@example.org', email_verified: true },
  }));
  issuer = await startProvider({ CLIENT_ID, CLIENT_SECRET, REDIRECT_URI: redirect, ACCOUNTS_FILE: accounts });
  site = await Site.start('oidc', {
    httpAddr: `127.0.0.1:${port}`,
    env: {
      VESALIUS__AUTH__OIDC__ISSUER: issuer,
      VESALIUS__AUTH__OIDC__CLIENT_ID: CLIENT_ID,
      VESALIUS__AUTH__OIDC__CLIENT_SECRET: CLIENT_SECRET,
      VESALIUS__AUTH__OIDC__REDIRECT_URL: redirect,
      VESALIUS__AUTH__OIDC__DISPLAY_NAME: LABEL,
    },
  });
  assert.equal(site.base, base);
  // A local user without a password, linked at the first login by the provider's verified
  // e-mail address (written in another case here).
  site.admin('user', 'create', '--org', 'default', '--role', 'clinician', '--username', 'alice',
    '--email', 'Alice@Example.org', '--no-password');
  const ct = synth(join(site.tmp, 'ct'), 11, 4);
  site.import(ct.dir);
  study = Object.values(ct.images)[0].study;
  // Discovery runs in the background: the login endpoint answers 503 until it is done.
  const deadline = Date.now() + 30000;
  for (;;) {
    const r = await fetch(`${base}/api/v1/auth/oidc/login`, { redirect: 'manual' });
    if (r.status === 302) break;
    assert.equal(r.status, 503, await r.text());
    assert.ok(Date.now() < deadline, 'OpenID Connect discovery did not finish in 30 s');
    await new Promise((ok) => setTimeout(ok, 200));
  }
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close();
  if (site) await site.stop();
  if (provider && provider.exitCode === null) provider.kill('SIGTERM');
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

/** On the provider's pages: its development login form, then its consent form. */
async function signInAtProvider(page, login) {
  await page.waitForURL((u) => u.href.startsWith(issuer));
  await page.locator('input[name=login]').fill(login);
  await page.locator('input[name=password]').fill('any password');
  await page.locator('button[type=submit]').click();
  // Consent (first login of this account at this client in this browser context).
  const consent = page.getByRole('button', { name: 'Continue' });
  await consent.waitFor();
  await consent.click();
}

for (const [kind, viewport] of Object.entries(VIEWPORTS)) {
  test(`${kind}: a viewer link without a session, the provider's button, back at the study logged in`, async () => {
    const ctx = await browser.newContext(viewport);
    const page = await ctx.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    try {
      await page.goto(`${site.base}/view/${study}`);
      await page.waitForURL(/\/login\?next=/);
      const button = page.locator('#oidc-login');
      await button.waitFor();
      assert.equal(await button.innerText(), LABEL);
      await page.screenshot({ path: join(ARTIFACTS, `oidc-${kind}-login.png`), fullPage: true });
      await button.click();
      await signInAtProvider(page, 'alice');
      // Back on the site: the callback's page moves on to `next`, the viewer of the study.
      await page.waitForURL(`${site.base}/view/${study}`, { timeout: 30000 });
      await page.waitForFunction(() => ['rendered', 'raw'].includes(document.getElementById('view')?.dataset.state),
        null, { timeout: 30000 });
      await page.locator('#who-name', { hasText: 'default' }).waitFor();
      const who = await page.locator('#who-name').innerText();
      assert.match(who, /^(alice|Dr Alice) · default \(clinician\)$/, who);
      const me = await page.request.get(`${site.base}/api/v1/auth/me`);
      assert.equal(me.status(), 200);
      const body = await me.json();
      assert.equal(body.actor.name, 'alice');
      assert.ok(body.csrf, 'the page can change state');
      await page.screenshot({ path: join(ARTIFACTS, `oidc-${kind}-viewer.png`), fullPage: true });
      assert.deepEqual(errors, []);
    } finally {
      await ctx.close();
    }
  });
}

test('an identity no local user matches is refused: the login screen says why, no session', async () => {
  const ctx = await browser.newContext(VIEWPORTS.desktop);
  const page = await ctx.newPage();
  try {
    await page.goto(`${site.base}/login`);
    const button = page.locator('#oidc-login');
    await button.waitFor();
    await button.click();
    await signInAtProvider(page, 'stranger');
    // The callback refuses (403) and moves on to the app's login screen, which says why.
    // With the page the login was for (the worklist, by default).
    await page.waitForURL(`${site.base}/login?refused=forbidden&next=/worklist`, { timeout: 30000 });
    const alert = page.locator('#auth-error');
    await alert.waitFor();
    assert.match(await alert.innerText(), /no active Vesalius user matches that identity/);
    assert.match(await alert.innerText(), new RegExp(`^${LABEL} signed you in`));
    await page.screenshot({ path: join(ARTIFACTS, 'oidc-refused.png'), fullPage: true });
    const cookies = (await ctx.cookies(site.base)).map((c) => c.name);
    assert.ok(!cookies.includes('vesalius_session'), `no session cookie: ${cookies}`);
    const me = await page.request.get(`${site.base}/api/v1/auth/me`);
    assert.equal(me.status(), 401);
    // The password form is still there, and the OpenID Connect button to try again.
    await page.getByLabel('Username').waitFor();
    assert.equal(await button.count(), 1);
  } finally {
    await ctx.close();
  }
});

test('cancelling at the provider comes back to the login screen with a message', async () => {
  const ctx = await browser.newContext(VIEWPORTS.phone);
  const page = await ctx.newPage();
  try {
    // On the way to the Alerts page.
    await page.goto(`${site.base}/login?next=${encodeURIComponent('/alerts?x=1')}`);
    await page.locator('#oidc-login').click();
    await page.waitForURL((u) => u.href.startsWith(issuer));
    await page.getByRole('link', { name: '[ Cancel ]' }).click();
    // The provider answers the callback with error=access_denied (RFC 6749 4.1.2.1); the login
    // screen comes back with the page the user was going to (issue 6).
    await page.waitForURL(`${site.base}/login?refused=unauthorized&next=/alerts%3Fx%3D1`, { timeout: 30000 });
    const alert = page.locator('#auth-error');
    await alert.waitFor();
    assert.match(await alert.innerText(), /did not complete/);
    assert.equal(await page.locator('#oidc-login').getAttribute('href'), `/api/v1/auth/oidc/login?next=${encodeURIComponent('/alerts?x=1')}`);
    assert.equal(await page.locator('form.auth-form').getAttribute('action'), `/login?next=${encodeURIComponent('/alerts?x=1')}`);
    await page.screenshot({ path: join(ARTIFACTS, 'oidc-cancelled.png'), fullPage: true });
    assert.equal((await page.request.get(`${site.base}/api/v1/auth/me`)).status(), 401);
  } finally {
    await ctx.close();
  }
});
