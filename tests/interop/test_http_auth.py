"""Issue 4, HTTP side: nothing is open without credentials; the first start prints a one-time
set-up link; the administrator sets a password through it, logs in and gets a session cookie
(HttpOnly, SameSite) and a CSRF token; wrong passwords and forged sessions are refused with a
JSON 401; state-changing requests of a cookie session need the CSRF token."""
import re

import requests

from conftest import Server


def start(tmp_path):
    srv = Server(tmp_path / "data", extra_env={"VESALIUS__AUTH__REQUIRED": "true"})
    link = None
    for _ in range(20):
        line = srv.proc.stdout.readline()
        m = re.search(r"first start\s+:.*(https?://\S+/setup\?token=\S+)", line)
        if m:
            link = m.group(1)
            break
    return srv, link


def test_credentials_are_required_and_a_session_works(tmp_path):
    srv, link = start(tmp_path)
    try:
        assert link, "the first start prints a set-up link"
        # Health stays open; data does not.
        assert requests.get(f"{srv.base}/healthz").status_code == 200
        r = requests.get(f"{srv.dicomweb}/studies")
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        assert r.headers.get("WWW-Authenticate") == "Bearer"
        assert requests.get(f"{srv.base}/api/v1/stats").status_code == 401
        r = requests.get(f"{srv.dicomweb}/studies", headers={"Authorization": "Bearer vsl_nope_nope"})
        assert r.status_code == 401
        r = requests.get(f"{srv.dicomweb}/studies", cookies={"vesalius_session": "forged"})
        assert r.status_code == 401

        # The set-up link opens the app's set-up screen (issue 6), which asks what the token is
        # for; posting the token and a password logs the admin in.
        token = link.split("token=", 1)[1]
        page = requests.get(link)
        assert page.status_code == 200 and "/js/main.js" in page.text
        info = requests.get(f"{srv.base}/api/v1/auth/setup", params={"token": token}).json()
        assert info["first_start"] is True and info["username"] == "admin", info
        r = requests.get(f"{srv.base}/api/v1/auth/setup", params={"token": "nope"})
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        r = requests.post(f"{srv.base}/api/v1/auth/setup", json={"token": token, "password": "short"})
        assert r.status_code == 400, r.text
        r = requests.post(f"{srv.base}/api/v1/auth/setup",
                          json={"token": token, "password": "correct horse battery"})
        assert r.status_code == 200, r.text
        # The token is single-use.
        r = requests.post(f"{srv.base}/api/v1/auth/setup",
                          json={"token": token, "password": "another long password"})
        assert r.status_code in (401, 403, 404, 409), r.text

        r = requests.post(f"{srv.base}/api/v1/auth/login", json={"username": "admin", "password": "wrong password!"})
        assert r.status_code == 401, r.text
        s = requests.Session()
        r = s.post(f"{srv.base}/api/v1/auth/login",
                   json={"username": "admin", "password": "correct horse battery"})
        assert r.status_code == 200, r.text
        csrf = r.json()["csrf"]
        cookie = r.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        me = s.get(f"{srv.base}/api/v1/auth/me").json()
        assert me["role"] == "admin" and me["org"] == "default"
        assert s.get(f"{srv.dicomweb}/studies").status_code in (200, 204)
        # A state change through the cookie needs the CSRF token.
        r = s.delete(f"{srv.base}/api/v1/studies/1.2.3")
        assert r.status_code == 403, r.text
        r = s.delete(f"{srv.base}/api/v1/studies/1.2.3", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 404, r.text
        assert s.post(f"{srv.base}/api/v1/auth/logout").status_code == 403  # CSRF
        assert s.post(f"{srv.base}/api/v1/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 200
        assert s.get(f"{srv.dicomweb}/studies").status_code == 401
    finally:
        srv.stop()


def test_cli_commands_carry_the_token_from_the_environment(tmp_path, synth_dir):
    """`vesalius import`/`query` talk to a server that requires credentials with VESALIUS_TOKEN,
    a token made by `vesalius admin token create` (README quick start)."""
    import json
    import os
    import subprocess

    from conftest import BIN

    srv, _ = start(tmp_path)
    try:
        data = str(tmp_path / "data")
        out = subprocess.run([BIN, "admin", "token", "create", "--data-dir", data, "--org", "default",
                              "--role", "admin", "--name", "cli", "--json"],
                             capture_output=True, text=True, check=True)
        token = json.loads(out.stdout)["token"]
        server = ["--server", srv.base]
        env = dict(os.environ)
        env.pop("VESALIUS_TOKEN", None)
        r = subprocess.run([BIN, "query", *server, "PatientName=*"], capture_output=True, text=True, env=env)
        assert r.returncode != 0 and "401" in (r.stdout + r.stderr), r.stdout + r.stderr
        env["VESALIUS_TOKEN"] = token
        r = subprocess.run([BIN, "import", *server, str(synth_dir)], capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        r = subprocess.run([BIN, "query", *server, "PatientName=*", "--json"], capture_output=True, text=True,
                           env=env)
        assert r.returncode == 0 and json.loads(r.stdout), r.stdout + r.stderr
    finally:
        srv.stop()
