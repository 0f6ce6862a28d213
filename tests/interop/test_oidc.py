"""OpenID Connect login end to end (issue 4) against a real provider: npm `oidc-provider` (a
certified OpenID Provider) under node on loopback, set up by tests/interop/oidc/provider.mjs with
one confidential client (client_secret_basic, PKCE required), and the real `vesalius serve`.

The browser is a `requests.Session` whose redirects are followed by hand; the provider's own
login and consent forms (its development interactions) are parsed and submitted. Users are made
with `vesalius admin user create … --email … --no-password` before the server starts; the first
login links the identity by its verified e-mail, later logins go by the linked subject.

Needs node and `npm ci` in tests/interop/oidc (scripts/install-deps test does both)."""

import json
import os
import re
import shutil
import socket
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urljoin, urlparse, urlunparse

import pytest
import requests

from conftest import BIN

OIDC_DIR = Path(__file__).resolve().parent / "oidc"
ORG = "st-marys"
CLIENT_ID = "vesalius"
CLIENT_SECRET = "interop-client-secret-0123456789"
ACCOUNTS = {
    # Linked by its verified e-mail at the first login (the local user's address differs in case).
    "alice": {"email": "alice@example.org", "email_verified": True, "name": "Dr Alice"},
    # Verified, but no local user has the address.
    "stranger": {"email": "stranger@example.org", "email_verified": True},
    # A local user has the address, but the provider does not vouch for it.
    "bob": {"email": "bob@example.org", "email_verified": False},
}


def vesalius(data_dir, *args, check=True):
    p = subprocess.run([BIN, *args, "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=120)
    if check and p.returncode != 0:
        raise AssertionError(f"vesalius {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def vesalius_json(data_dir, *args):
    return json.loads(vesalius(data_dir, *args, "--json").stdout)


def audit(data_dir, action):
    """Audit records of `action`, oldest first."""
    return list(reversed(vesalius_json(data_dir, "audit", "search", "--action", action, "--limit", "1000")))


def free_port():
    # The redirect URL registered at the provider names Vesalius' port, so it is picked first
    # (the provider itself takes port 0 and reports its issuer).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_line(proc, pattern, log, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                raise RuntimeError(f"process exited: {Path(log).read_text()[-3000:]}")
            continue
        m = re.search(pattern, line)
        if m:
            return m
    raise RuntimeError(f"no line matching {pattern!r}")


def start_provider(env, log, port=0):
    """Starts provider.mjs; returns (process, issuer)."""
    proc = subprocess.Popen([shutil.which("node"), str(OIDC_DIR / "provider.mjs")], cwd=OIDC_DIR,
                            env=dict(env, PORT=str(port)), text=True, stdout=subprocess.PIPE,
                            stderr=open(log, "a"))
    try:
        return proc, json.loads(wait_line(proc, r"^\{.*\}$", log).group(0))["issuer"]
    except Exception:
        proc.kill()
        raise


def stop(proc):
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# Where the provider puts e-mail and name: only in UserInfo (OpenID Connect Core 5.4, the
# library's default), or in the ID token too (Keycloak, Entra ID and most others).
@pytest.fixture(scope="module", params=["userinfo", "id_token"])
def site(request, tmp_path_factory):
    if shutil.which("node") is None or not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
        pytest.skip("node or tests/interop/oidc/node_modules missing: run scripts/install-deps test")
    tmp = tmp_path_factory.mktemp(f"oidc-{request.param}")
    data = tmp / "data"
    vesalius(data, "admin", "org", "create", ORG, "--name", "St Mary's Hospital")
    for user, email in [("alice", "Alice@Example.org"), ("bob", "bob@example.org")]:
        vesalius(data, "admin", "user", "create", "--org", ORG, "--role", "clinician", "--username", user,
                 "--email", email, "--no-password")
    accounts = tmp / "accounts.json"
    accounts.write_text(json.dumps(ACCOUNTS))

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    redirect = f"{base}/api/v1/auth/oidc/callback"
    provider_log = tmp / "provider.log"
    provider_env = dict(os.environ, NODE_ENV="development", CLIENT_ID=CLIENT_ID, CLIENT_SECRET=CLIENT_SECRET,
                        REDIRECT_URI=redirect, ACCOUNTS_FILE=str(accounts),
                        ID_TOKEN_CLAIMS="1" if request.param == "id_token" else "0")
    site = {"base": base, "data": data, "accounts": accounts, "redirect": redirect,
            "provider_env": provider_env, "provider_log": provider_log, "provider": None}
    server = None
    try:
        site["provider"], site["issuer"] = start_provider(provider_env, provider_log)
        cfg = tmp / "vesalius.toml"
        cfg.write_text(
            "[auth]\nrequired = true\n"
            f'[auth.oidc]\nissuer = "{site["issuer"]}"\nclient_id = "{CLIENT_ID}"\nredirect_url = "{redirect}"\n'
            'display_name = "St Mary\'s login"\n'
        )
        site["server_log"] = server_log = tmp / "vesalius.log"
        # The secret from the environment, as docs/configuration.md advises.
        venv = dict(os.environ, RUST_LOG="info", VESALIUS__LIMITS__MIN_FREE_BYTES="0",
                    VESALIUS__AUTH__OIDC__CLIENT_SECRET=CLIENT_SECRET)
        server = subprocess.Popen(
            [BIN, "--config", str(cfg), "serve", "--data-dir", str(data), "--dicom-addr", "127.0.0.1:0",
             "--http-addr", f"127.0.0.1:{port}"],
            env=venv, text=True, stdout=subprocess.PIPE, stderr=open(server_log, "w"))
        m = wait_line(server, r"OpenID Connect\s+:\s+(\S+)", server_log)
        assert m.group(1) == site["issuer"]
        # Discovery runs in the background: the login endpoint answers 503 until it is done.
        deadline = time.time() + 30
        while True:
            r = requests.get(f"{base}/api/v1/auth/oidc/login", allow_redirects=False, timeout=10)
            if r.status_code == 302 or time.time() > deadline:
                break
            assert r.status_code == 503, r.text
            time.sleep(0.2)
        assert r.status_code == 302, server_log.read_text()[-3000:]
        yield site
    finally:
        stop(server)
        stop(site["provider"])


class Forms(HTMLParser):
    """The forms of a page: action and inputs (name -> value)."""

    def __init__(self):
        super().__init__()
        self.forms = []
        self.links = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "method": a.get("method", "get"), "inputs": {}})
        elif tag == "input" and self.forms and a.get("name"):
            self.forms[-1]["inputs"][a["name"]] = a.get("value") or ""
        elif tag == "a" and a.get("href"):
            self.links.append(a["href"])


def parse_page(html):
    p = Forms()
    p.feed(html)
    return p


def cookie_names(browser):
    return {c.name for c in browser.cookies}


def to_provider(site, browser, next_path=None):
    """Starts a login at Vesalius; returns the provider URL it redirects to."""
    url = f"{site['base']}/api/v1/auth/oidc/login"
    if next_path is not None:
        url += "?" + urlencode({"next": next_path})
    r = browser.get(url, allow_redirects=False, timeout=30)
    assert r.status_code == 302, r.text
    assert "vesalius_oidc" in cookie_names(browser)
    set_cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie
    location = r.headers["Location"]
    assert location.startswith(site["issuer"] + "/auth?")
    q = parse_qs(urlparse(location).query)
    assert q["client_id"] == [CLIENT_ID] and q["redirect_uri"] == [site["redirect"]]
    assert q["response_type"] == ["code"] and q["code_challenge_method"] == ["S256"]
    assert set(q["scope"][0].split()) == {"openid", "email", "profile"}
    assert q["state"][0] and q["nonce"][0]
    return location


def through_provider(site, browser, url, login, abort=False):
    """Follows the provider's redirects, filling its login and consent forms as `login`; returns
    the callback URL it finally sends the browser to (not requested yet)."""
    for _ in range(12):
        r = browser.get(url, allow_redirects=False, timeout=30)
        while r.status_code in (302, 303):
            url = urljoin(url, r.headers["Location"])
            if url.startswith(site["redirect"]):
                return url
            r = browser.get(url, allow_redirects=False, timeout=30)
        assert r.status_code == 200, f"{url}: {r.status_code} {r.text[:500]}"
        page = parse_page(r.text)
        assert page.forms, r.text[:1000]
        form = page.forms[0]
        data = dict(form["inputs"])
        if data.get("prompt") == "login":
            if abort:
                # The provider's "[ Cancel ]" link: it answers the client with access_denied.
                url = urljoin(url, next(h for h in page.links if h.endswith("/abort")))
                continue
            data.update(login=login, password="anything")
        else:
            assert data.get("prompt") == "consent", data
        r = browser.post(urljoin(url, form["action"]), data=data, allow_redirects=False, timeout=30)
        assert r.status_code in (302, 303), r.text[:500]
        url = urljoin(url, r.headers["Location"])
        if url.startswith(site["redirect"]):
            return url
    raise AssertionError("the provider never redirected back")


def log_in(site, browser, login, next_path=None):
    """The callback URL after logging in as `login` at the provider."""
    return through_provider(site, browser, to_provider(site, browser, next_path), login)


def me(site, browser):
    return browser.get(f"{site['base']}/api/v1/auth/me", timeout=30)


def oidc_logins(site):
    return [e for e in audit(site["data"], "login") if e["event"]["details"].get("method") == "oidc"]


def failures(site):
    return [e["event"]["details"] for e in audit(site["data"], "login-failed")
            if e["event"]["details"].get("method") == "oidc"]


def test_first_login_links_by_verified_email_and_opens_a_session(site):
    browser = requests.Session()
    assert me(site, browser).status_code == 401
    callback = log_in(site, browser, "alice", next_path="/api/v1/auth/me?x=1")
    assert parse_qs(urlparse(callback).query)["code"][0]
    r = browser.get(callback, allow_redirects=False, timeout=30)
    assert r.status_code == 303, r.text
    assert r.headers["Location"] == "/api/v1/auth/me?x=1"
    # The normal session cookie, and the pending login gone.
    assert cookie_names(browser) >= {"vesalius_session"}
    assert "vesalius_oidc" not in cookie_names(browser)
    assert "SameSite=Strict" in r.headers["Set-Cookie"]
    who = me(site, browser)
    assert who.status_code == 200, who.text
    assert who.json()["actor"]["name"] == "alice"
    assert who.json()["org"] == ORG and who.json()["role"] == "clinician"

    links = audit(site["data"], "oidc-link")
    assert len(links) == 1
    d = links[0]["event"]["details"]
    assert (d["issuer"], d["subject"], d["email"]) == (site["issuer"], "alice", "alice@example.org")
    assert links[0]["event"]["actor"]["name"] == "alice" and links[0]["event"]["org"] == ORG
    logins = oidc_logins(site)
    assert len(logins) == 1 and logins[0]["event"]["actor"]["name"] == "alice"
    assert logins[0]["event"]["details"]["subject"] == "alice"
    users = {u["username"]: u for u in vesalius_json(site["data"], "admin", "user", "list")}
    assert users["alice"]["oidc_linked"] and not users["bob"]["oidc_linked"]
    assert vesalius_json(site["data"], "audit", "verify")["ok"]


def test_later_logins_go_by_the_linked_subject(site):
    # The provider now gives alice another address: the link by (issuer, subject) still holds.
    accounts = dict(ACCOUNTS, alice={"email": "alice.new@elsewhere.example", "email_verified": True})
    site["accounts"].write_text(json.dumps(accounts))
    try:
        browser = requests.Session()
        callback = log_in(site, browser, "alice")
        # A script asking for JSON gets what password login answers, with the CSRF token.
        r = browser.get(callback, headers={"Accept": "application/json"}, allow_redirects=False, timeout=30)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["username"] == "alice" and body["org"] == ORG and body["next"] == "/"
        assert me(site, browser).json()["actor"]["name"] == "alice"
        # The session works for state-changing requests with its CSRF token, like any other.
        out = browser.post(f"{site['base']}/api/v1/auth/logout", timeout=30)
        assert out.status_code == 403
        out = browser.post(f"{site['base']}/api/v1/auth/logout", headers={"X-CSRF-Token": body["csrf"]}, timeout=30)
        assert out.status_code == 200, out.text
        assert me(site, browser).status_code == 401
    finally:
        site["accounts"].write_text(json.dumps(ACCOUNTS))
    assert len(audit(site["data"], "oidc-link")) == 1
    logins = oidc_logins(site)
    assert len(logins) == 2 and logins[-1]["event"]["details"]["subject"] == "alice"


def test_a_browser_gets_a_page_that_moves_on_with_the_session(site):
    # Accept: text/html: a 200 page moving on to `next` by itself (a same-site navigation, so the
    # SameSite=Strict session cookie goes along, which a redirect chain from the provider loses).
    browser = requests.Session()
    callback = log_in(site, browser, "alice", next_path="/dicom-web/studies")
    r = browser.get(callback, headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"},
                    allow_redirects=False, timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert 'http-equiv=refresh content="0;url=/dicom-web/studies"' in r.text
    studies = browser.get(f"{site['base']}/dicom-web/studies", timeout=30)
    assert studies.status_code in (200, 204), studies.text
    # The page learns its CSRF token from /me and can then change state (here: log out).
    csrf = me(site, browser).json()["csrf"]
    assert csrf
    out = browser.post(f"{site['base']}/api/v1/auth/logout", headers={"X-CSRF-Token": csrf}, timeout=30)
    assert out.status_code == 200, out.text


def test_an_identity_without_a_user_is_refused(site):
    before = len(failures(site))
    browser = requests.Session()
    callback = log_in(site, browser, "stranger")
    r = browser.get(callback, headers={"Accept": "application/json"}, allow_redirects=False, timeout=30)
    assert r.status_code == 403, r.text
    assert r.json()["error"] == "forbidden" and "administrator" in r.json()["message"]
    assert "vesalius_session" not in cookie_names(browser)
    assert "vesalius_oidc" not in cookie_names(browser)
    assert me(site, browser).status_code == 401
    new = failures(site)[before:]
    assert [(d["reason"], d["subject"], d["email"]) for d in new] == [
        ("no-email-match", "stranger", "stranger@example.org")]


def test_an_unverified_email_links_nobody(site):
    before = len(failures(site))
    browser = requests.Session()
    r = browser.get(log_in(site, browser, "bob"), allow_redirects=False, timeout=30)
    assert r.status_code == 403
    assert "vesalius_session" not in cookie_names(browser)
    assert [d["reason"] for d in failures(site)[before:]] == ["unknown-identity-email-unverified"]
    users = {u["username"]: u for u in vesalius_json(site["data"], "admin", "user", "list")}
    assert not users["bob"]["oidc_linked"]


def test_a_tampered_state_is_refused(site):
    before = len(failures(site))
    browser = requests.Session()
    callback = log_in(site, browser, "alice")
    parts = urlparse(callback)
    q = parse_qs(parts.query)
    q["state"] = [q["state"][0][:-2] + ("AA" if not q["state"][0].endswith("AA") else "BB")]
    forged = urlunparse(parts._replace(query=urlencode({k: v[0] for k, v in q.items()})))
    r = browser.get(forged, headers={"Accept": "application/json"}, allow_redirects=False, timeout=30)
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "unauthorized" and "state" in r.json()["message"]
    assert "vesalius_session" not in cookie_names(browser)
    # The pending login is gone: the genuine callback cannot be replayed after the refusal.
    assert "vesalius_oidc" not in cookie_names(browser)
    r = browser.get(callback, headers={"Accept": "application/json"}, allow_redirects=False, timeout=30)
    assert r.status_code == 401 and "no pending login" in r.json()["message"]
    assert me(site, browser).status_code == 401
    assert [d["reason"] for d in failures(site)[before:]] == ["state-mismatch", "no-pending-login"]


def test_the_provider_refusing_is_reported(site):
    before = len(failures(site))
    browser = requests.Session()
    callback = through_provider(site, browser, to_provider(site, browser), "alice", abort=True)
    assert parse_qs(urlparse(callback).query)["error"] == ["access_denied"]
    r = browser.get(callback, headers={"Accept": "text/html"}, allow_redirects=False, timeout=30)
    assert r.status_code == 401
    assert "Login refused" in r.text and "access_denied" in r.text
    assert "vesalius_session" not in cookie_names(browser)
    assert [d["reason"] for d in failures(site)[before:]] == ["provider-error"]


def test_a_new_provider_signing_key_is_fetched(site):
    # The provider restarts on the same address with a new signing key (key rotation): the first
    # ID token names a key Vesalius has not seen, so it fetches the keys again and goes on.
    stop(site["provider"])
    site["provider"], issuer = start_provider(site["provider_env"], site["provider_log"],
                                              port=urlparse(site["issuer"]).port)
    assert issuer == site["issuer"]
    browser = requests.Session()
    r = browser.get(log_in(site, browser, "alice"), allow_redirects=False, timeout=30)
    assert r.status_code == 303, r.text
    assert me(site, browser).json()["actor"]["name"] == "alice"
    assert "keys fetched again" in site["server_log"].read_text()


def test_next_must_stay_on_the_site(site):
    for evil in ["https://evil.example/", "//evil.example/x"]:
        browser = requests.Session()
        r = browser.get(log_in(site, browser, "alice", next_path=evil), allow_redirects=False, timeout=30)
        assert r.status_code == 303 and r.headers["Location"] == "/"


def test_the_login_page_offers_the_provider(site):
    # Issue 6: the login screen is the app's (its shell), which asks how one logs in here and
    # offers the provider's button, labelled as configured, leading into the flow above.
    page = requests.get(f"{site['base']}/login?next=/s/x", timeout=30)
    assert page.status_code == 200 and "/js/main.js" in page.text
    methods = requests.get(f"{site['base']}/api/v1/auth/methods", timeout=30).json()
    assert methods["password"] is True
    assert methods["oidc"] == {"label": "St Mary's login", "login": "/api/v1/auth/oidc/login"}
    r = requests.get(f"{site['base']}{methods['oidc']['login']}?next=/s/x", allow_redirects=False, timeout=30)
    assert r.status_code in (302, 303) and r.headers["Location"].startswith(site["issuer"]), r.headers


def test_an_administrator_links_an_identity_by_subject(site):
    # bob's provider does not vouch for his address, so only an explicit link lets him in.
    vesalius(site["data"], "admin", "user", "oidc-link", "bob", "--issuer", site["issuer"], "--subject", "bob")
    browser = requests.Session()
    callback = log_in(site, browser, "bob")
    r = browser.get(callback, headers={"Accept": "application/json"}, allow_redirects=False, timeout=30)
    assert r.status_code == 200 and r.json()["username"] == "bob", r.text
    # The same identity cannot be linked to a second user.
    p = vesalius(site["data"], "admin", "user", "oidc-link", "alice", "--issuer", site["issuer"], "--subject", "bob",
                 check=False)
    assert p.returncode != 0 and "already" in p.stderr
    vesalius(site["data"], "admin", "user", "oidc-link", "bob", "--unlink")
    browser = requests.Session()
    callback = log_in(site, browser, "bob")
    r = browser.get(callback, headers={"Accept": "application/json"}, allow_redirects=False, timeout=30)
    assert r.status_code == 403, r.text
