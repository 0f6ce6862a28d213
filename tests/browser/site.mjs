// A real `vesalius serve` for the browser tests: a temporary data directory, ports chosen by
// the system (port 0), a synthetic CT head imported through the API, users of two
// organisations, and the modality values of every image read with pydicom (expected.py).

import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, statSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const ROOT = resolve(here, '../..');
export const BIN = process.env.VESALIUS_BIN || join(ROOT, 'target/debug/vesalius');
const PYTHON = process.env.VESALIUS_PYTHON || join(ROOT, '.venv/bin/python');
export const PASSWORD = 'correct horse battery staple';

/** Debian's Chromium (never a downloaded browser), headless, with the flags every test uses. */
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run'];

/** The two viewports every page is tested in: a desktop and a phone (touch). */
export const VIEWPORTS = {
  desktop: { viewport: { width: 1280, height: 800 } },
  phone: { viewport: { width: 390, height: 844 }, deviceScaleFactor: 3, isMobile: true, hasTouch: true },
};

/** Logs in through the login form `page` is on; resolves once the page is at `landing`. */
export async function login(page, username, landing = /\/worklist$/) {
  await page.fill('input[name=username]', username);
  await page.fill('input[name=password]', PASSWORD);
  await Promise.all([page.waitForURL(landing), page.click('form button')]);
}

/** (An init script.) Stubs the browser's Notification and AudioContext so the test sees what the app asked. */
export function alertStubs() {
  window.__seen = { asked: 0, notes: [], contexts: 0, tones: 0 };
  let permission = 'default';
  window.Notification = class {
    constructor(title, opts) { window.__seen.notes.push({ title, ...opts }); }
    static get permission() { return permission; }
    static async requestPermission() { window.__seen.asked += 1; permission = 'granted'; return permission; }
  };
  window.AudioContext = class {
    constructor() { window.__seen.contexts += 1; this.state = 'running'; this.currentTime = 0; this.destination = {}; }
    createOscillator() {
      return { frequency: { value: 0 }, connect() {}, start() { window.__seen.tones += 1; }, stop() {} };
    }
    createGain() { return { gain: { value: 0 }, connect() {} }; }
    resume() { return Promise.resolve(); }
  };
}

/** Starts the browser. */
export function launch() {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });
}

/** Screenshots and logs go here (never committed): `target/browser-artifacts` by default. */
export const ARTIFACTS = process.env.VESALIUS_ARTIFACTS || join(ROOT, 'target/browser-artifacts');

function files(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...files(p));
    else if (p.endsWith('.dcm')) out.push(p);
  }
  return out.sort();
}

function run(args, env = {}) {
  // `admin` and `serve` of one data directory must agree on the site's name (its key and peers).
  return execFileSync(BIN, args, { env: { ...process.env, ...env }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Writes a synthetic CT head (`vesalius synth`) and reads its expected values. */
export function synth(dir, seed, slices, patients = 1) {
  run(['synth', '--out', dir, '--seed', String(seed), '--slices', String(slices), '--kinds', 'ct-head', '--patients', String(patients)]);
  const paths = files(dir);
  const json = execFileSync(PYTHON, [join(here, 'expected.py'), ...paths], { encoding: 'utf8', maxBuffer: 64 << 20 });
  return { dir, paths, images: JSON.parse(json) };
}

export class Site {
  /**
   * Starts the server on a fresh data directory; `name`: its `[site] name`. `authRequired:
   * false` serves anonymous requests as the server itself (`[auth] required = false`: the site
   * level, the only caller that may create organisations). `httpAddr`: the HTTP address (a
   * test that must know the port before the start, e.g. an OpenID Connect redirect URL, picks
   * a free one); `env`: more environment for the server.
   */
  static async start(name = 'vesalius', { authRequired = true, httpAddr = '127.0.0.1:0', env = {} } = {}) {
    const s = new Site();
    s.name = name;
    s.tmp = mkdtempSync(join(tmpdir(), 'vesalius-web-'));
    s.data = join(s.tmp, 'data');
    mkdirSync(ARTIFACTS, { recursive: true });
    s.proc = spawn(BIN, ['serve', '--data-dir', s.data, '--dicom-addr', '127.0.0.1:0', '--http-addr', httpAddr], {
      env: { ...process.env, VESALIUS__LIMITS__MIN_FREE_BYTES: '0', VESALIUS__AUTH__REQUIRED: String(authRequired), VESALIUS__SITE__NAME: name, RUST_LOG: process.env.RUST_LOG || 'warn', ...env },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    s.base = await new Promise((ok, fail) => {
      const timer = setTimeout(() => fail(new Error('the server did not report its address in 60 s')), 60000);
      const lines = createInterface({ input: s.proc.stdout });
      let base = null;
      lines.on('line', (line) => {
        const m = /DICOMweb\s+:\s+(http:\/\/127\.0\.0\.1:\d+)\/dicom-web/.exec(line);
        if (m) base = m[1];
        // Issue 6: the first start's set-up link (the app's set-up screen), printed once.
        const setup = /(https?:\/\/\S+\/setup\?token=\S+)/.exec(line);
        if (setup) s.setupUrl = setup[1];
        // The fresh directory's first organisation is made after the addresses are printed:
        // `admin` commands must wait for it (they failed with `no organisation "default"`).
        if (base && /^\s*first start\s+:/.test(line)) { clearTimeout(timer); ok(base); }
      });
      s.proc.on('exit', (code) => fail(new Error(`the server exited (${code})`)));
    });
    return s;
  }

  /** Runs `sql` on the site's index database (Python's sqlite3; the server keeps running). */
  sql(sql) {
    execFileSync(PYTHON, ['-c', 'import sqlite3, sys\nc = sqlite3.connect(sys.argv[1], timeout=10)\nc.executescript(sys.stdin.read())\nc.commit()',
      join(this.data, 'index.db')], { input: sql });
  }

  admin(...args) {
    const [group, ...rest] = args;
    return run(['admin', group, '--data-dir', this.data, ...rest], { VES_PW: PASSWORD, VESALIUS__SITE__NAME: this.name });
  }

  /** This site's public key (`admin site show`). */
  publicKey() {
    return JSON.parse(this.admin('site', 'show', '--json')).public_key;
  }

  /**
   * Links this site with `other` (issue 5 peers): this site's users search and view `other`
   * (which lets this site query it, `--may-query`).
   */
  peerWith(other, org = 'default') {
    other.admin('peer', 'add', this.name, '--url', this.base, '--public-key', this.publicKey(), '--org', org, '--may-query');
    this.admin('peer', 'add', other.name, '--url', other.base, '--public-key', other.publicKey(), '--org', org);
  }

  /** A user with a password (`--password-env`). */
  user(org, username, role = 'clinician') {
    this.admin('user', 'create', '--org', org, '--role', role, '--username', username, '--password-env', 'VES_PW');
  }

  /**
   * Imports `dir` through the running server (`vesalius import` with an admin's token) into
   * organisation `org` (a token of `org`: tokens are bound to theirs).
   */
  import(dir, org = 'default') {
    this.tokens = this.tokens || {};
    if (!this.tokens[org]) {
      const name = org === 'default' ? 'browser-tests' : `browser-tests-${org}`;
      this.tokens[org] = JSON.parse(this.admin('token', 'create', '--org', org, '--role', 'admin', '--name', name, '--json')).token;
    }
    if (org === 'default') this.token = this.tokens[org];
    return run(['import', '--server', this.base, dir], { VESALIUS_TOKEN: this.tokens[org] });
  }

  /** Stops the server and removes its temporary directory (VESALIUS_KEEP=1 keeps it). */
  async stop() {
    if (this.proc && this.proc.exitCode === null) {
      const exited = new Promise((ok) => this.proc.once('exit', ok));
      this.proc.kill('SIGTERM');
      await Promise.race([exited, new Promise((ok) => setTimeout(ok, 10000))]);
    }
    if (this.tmp && !process.env.VESALIUS_KEEP) rmSync(this.tmp, { recursive: true, force: true });
  }
}
