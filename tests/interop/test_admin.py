"""Scripted set-up and audit tooling (issue 4): `vesalius admin org|user|token|ae` on a fresh data
directory, tokens used against the running server, and `vesalius audit verify|search|export|
checkpoint`, including tamper tests that edit index.db behind the archive's back with sqlite3."""

import json
import os
import shutil
import sqlite3
import subprocess

import pytest
import requests

from conftest import BIN, Server

ORG = "st-marys"
PASSWORD = "correct horse battery staple"


def run(data_dir, *args, stdin=None, env=None, check=True):
    """Runs `vesalius ARGS --data-dir DATA_DIR`; returns the CompletedProcess."""
    e = dict(os.environ)
    e.pop("RUST_BACKTRACE", None)
    e.update(env or {})
    p = subprocess.run(
        [BIN, *args, "--data-dir", str(data_dir)],
        input=stdin,
        capture_output=True,
        text=True,
        env=e,
        timeout=120,
    )
    if check and p.returncode != 0:
        raise AssertionError(f"vesalius {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def run_json(data_dir, *args, **kw):
    return json.loads(run(data_dir, *args, "--json", **kw).stdout)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A data directory set up only with `vesalius admin` (the server never ran on it)."""
    d = tmp_path_factory.mktemp("admin") / "data"
    assert not d.exists()
    run(d, "admin", "org", "create", ORG, "--name", "St Mary's Hospital")
    run(d, "admin", "org", "create", "elsewhere")
    alice = run_json(
        d, "admin", "user", "create", "--org", ORG, "--role", "clinician", "--username", "Alice",
        "--display-name", "Dr Alice", "--email", "alice@example.org", "--password-stdin", stdin=PASSWORD + "\n",
    )
    bob = run_json(
        d, "admin", "user", "create", "--org", ORG, "--role", "admin", "--username", "bob",
        "--password-env", "BOB_PW", env={"BOB_PW": PASSWORD},
    )
    temp = run_json(d, "admin", "user", "create", "--org", ORG, "--role", "radiographer", "--username", "carol",
                    "--must-change-password")
    token = run_json(d, "admin", "token", "create", "--org", ORG, "--role", "service", "--name", "CT gateway")
    run(d, "admin", "ae", "add", "CT_ROOM2", "--org", ORG, "--allow", "127.0.0.1", "--allow", "10.1.0.0/16",
        "--listen", "10.1.2.7:104", "--may-query", "--description", "CT scanner, room 2")
    return {"dir": d, "alice": alice, "bob": bob, "carol": temp, "token": token}


def test_orgs(site):
    orgs = run_json(site["dir"], "admin", "org", "list")
    assert [(o["id"], o["name"]) for o in orgs] == [("elsewhere", "elsewhere"), (ORG, "St Mary's Hospital")]
    again = run(site["dir"], "admin", "org", "create", ORG, check=False)
    assert again.returncode != 0 and "already exists" in again.stderr
    bad = run(site["dir"], "admin", "org", "create", "Not A Slug", check=False)
    assert bad.returncode != 0


def test_users(site):
    d = site["dir"]
    assert site["alice"]["username"] == "alice"  # normalised
    assert site["alice"]["display_name"] == "Dr Alice"
    assert site["alice"]["has_password"] and not site["alice"]["must_change_password"]
    assert site["carol"]["must_change_password"] and len(site["carol"]["temporary_password"]) >= 12
    users = {u["username"]: u for u in run_json(d, "admin", "user", "list", "--org", ORG)}
    assert set(users) == {"alice", "bob", "carol", "ct-gateway"}
    assert users["ct-gateway"]["service"] and not users["ct-gateway"]["has_password"]
    assert users["bob"]["memberships"] == [{"org": ORG, "role": "admin"}]
    assert all("password_hash" not in u for u in users.values())
    assert run_json(d, "admin", "user", "list", "--org", "elsewhere") == []
    # A person needs a way to log in; a weak password is refused by the policy.
    p = run(d, "admin", "user", "create", "--org", ORG, "--role", "clinician", "--username", "dave", check=False)
    assert p.returncode != 0 and "needs a password" in p.stderr
    p = run(d, "admin", "user", "create", "--org", ORG, "--role", "clinician", "--username", "dave",
            "--password-stdin", stdin="short", check=False)
    assert p.returncode != 0 and "password" in p.stderr
    p = run(d, "admin", "user", "create", "--org", "nowhere", "--role", "clinician", "--username", "dave",
            "--password-stdin", stdin=PASSWORD, check=False)
    assert p.returncode != 0 and "no organisation" in p.stderr
    p = run(d, "admin", "user", "create", "--org", ORG, "--role", "boss", "--username", "dave", check=False)
    assert p.returncode != 0 and "unknown role" in p.stderr


def test_disable_enable_passwd(site):
    d = site["dir"]
    run(d, "admin", "user", "disable", "carol")
    assert {u["username"]: u["disabled"] for u in run_json(d, "admin", "user", "list")}["carol"]
    run(d, "admin", "user", "enable", "carol")
    run(d, "admin", "user", "passwd", "carol", "--password-stdin", stdin="a brand new passphrase\n")
    carol = {u["username"]: u for u in run_json(d, "admin", "user", "list")}["carol"]
    assert not carol["disabled"] and not carol["must_change_password"]
    p = run(d, "admin", "user", "passwd", "nobody", "--password-stdin", stdin=PASSWORD, check=False)
    assert p.returncode != 0 and "no user" in p.stderr


def test_tokens(site):
    d = site["dir"]
    t = site["token"]
    assert t["token"].startswith("vsl_") and t["id"] in t["token"]
    assert t["org"] == ORG and t["role"] == "service" and t["user"] == "ct-gateway"
    assert t["expires_ms"] > 0
    # A second token with the same label reuses the service account.
    t2 = run_json(d, "admin", "token", "create", "--org", ORG, "--role", "service", "--name", "CT gateway",
                  "--ttl-days", "0")
    assert t2["user_id"] == t["user_id"] and t2["expires_ms"] is None
    # A user's token: at most their role.
    mine = run_json(d, "admin", "token", "create", "--org", ORG, "--role", "clinician", "--user", "alice",
                    "--name", "alice's script")
    assert mine["user"] == "alice"
    p = run(d, "admin", "token", "create", "--org", ORG, "--role", "admin", "--user", "alice", "--name", "x",
            check=False)
    assert p.returncode != 0 and "cannot issue" in p.stderr
    listing = run(d, "admin", "token", "list", "--org", ORG, "--json").stdout
    for secret in (t["token"], t2["token"], mine["token"]):
        # vsl_{id}_{secret}; the secret itself may contain "_" (base64url).
        assert secret not in listing and secret.split("_", 2)[2] not in listing
    tokens = {x["id"]: x for x in json.loads(listing)}
    assert tokens[mine["id"]]["username"] == "alice" and tokens[mine["id"]]["status"] == "active"
    run(d, "admin", "token", "revoke", t2["id"])
    tokens = {x["id"]: x for x in run_json(d, "admin", "token", "list", "--org", ORG)}
    assert tokens[t2["id"]]["status"] == "revoked" and tokens[t["id"]]["status"] == "active"
    p = run(d, "admin", "token", "revoke", "nosuchtoken", check=False)
    assert p.returncode != 0


def test_ae_titles(site):
    d = site["dir"]
    aes = run_json(d, "admin", "ae", "list")
    assert aes == [{
        "ae_title": "CT_ROOM2", "org": ORG, "allowed_addrs": ["127.0.0.1", "10.1.0.0/16"],
        "listen": "10.1.2.7:104", "description": "CT scanner, room 2", "may_query": True,
    }]
    p = run(d, "admin", "ae", "add", "CT_ROOM2", "--org", ORG, check=False)
    assert p.returncode != 0 and "already exists" in p.stderr
    for bad in (["--allow", "10.0.0.300"], ["--listen", "nohost"]):
        p = run(d, "admin", "ae", "add", "MR1", "--org", ORG, *bad, check=False)
        assert p.returncode != 0
    run(d, "admin", "ae", "add", "MR1", "--org", "elsewhere")
    assert [a["ae_title"] for a in run_json(d, "admin", "ae", "list", "--org", "elsewhere")] == ["MR1"]
    run(d, "admin", "ae", "remove", "MR1")
    assert [a["ae_title"] for a in run_json(d, "admin", "ae", "list")] == ["CT_ROOM2"]
    p = run(d, "admin", "ae", "remove", "MR1", check=False)
    assert p.returncode != 0


def test_every_change_is_audited_and_the_chain_verifies(site):
    d = site["dir"]
    report = run_json(d, "audit", "verify")
    assert report["ok"] and report["problems"] == [] and report["head_seq"] >= 10
    events = run_json(d, "audit", "search", "--actor", "cli", "--limit", "1000")
    actions = [e["event"]["action"] for e in events]
    changes = [e["event"]["details"].get("change") for e in events if e["event"]["action"] == "admin-change"]
    assert actions.count("user-create") >= 4  # alice, bob, carol, the ct-gateway service account
    assert "token-create" in actions
    assert {"org-create", "ae-add", "user-disable", "user-enable", "password-reset"} <= set(changes)
    for e in events:
        assert e["event"]["actor"]["kind"] == "system" and e["event"]["actor"]["id"] == "cli"
        assert e["event"]["user_agent"].startswith("vesalius-cli/")
    # Secrets never reach the trail.
    text = json.dumps(events)
    assert site["token"]["token"] not in text and PASSWORD not in text
    assert site["carol"]["temporary_password"] not in text


def test_token_works_against_the_running_server(site, tmp_path):
    d = tmp_path / "data"
    shutil.copytree(site["dir"], d)
    server = Server(d, extra_env={"VESALIUS__AUTH__REQUIRED": "true"})
    try:
        url = f"{server.dicomweb}/studies"
        assert requests.get(url, timeout=30).status_code == 401
        bearer = {"Authorization": f"Bearer {site['token']['token']}"}
        assert requests.get(url, headers=bearer, timeout=30).status_code == 200
        assert requests.get(url, headers={"Authorization": "Bearer vsl_nope_nope"}, timeout=30).status_code == 401
        # The command line works beside the running server: a token created now works at once,
        # and is refused once revoked.
        t = run_json(d, "admin", "token", "create", "--org", ORG, "--role", "clinician", "--user", "alice",
                     "--name", "while running")
        h = {"Authorization": f"Bearer {t['token']}"}
        assert requests.get(url, headers=h, timeout=30).status_code == 200
        run(d, "admin", "token", "revoke", t["id"])
        assert requests.get(url, headers=h, timeout=30).status_code == 401
        run(d, "admin", "user", "disable", "ct-gateway")
        assert requests.get(url, headers=bearer, timeout=30).status_code == 401
        # Events of both processes form one chain.
        assert run_json(d, "audit", "verify")["ok"]
    finally:
        server.kill()
    assert run_json(d, "audit", "verify")["ok"]


def test_memberships_and_unlock(site, tmp_path):
    """A person works for two organisations (`join`, `leave`; never the last one); an
    administrator lifts a login lockout (`unlock`) while the server runs."""
    d = tmp_path / "data"
    shutil.copytree(site["dir"], d)
    run(d, "admin", "user", "join", "bob", "--org", "elsewhere", "--role", "auditor")
    bob = {u["username"]: u for u in run_json(d, "admin", "user", "list")}["bob"]
    assert sorted((m["org"], m["role"]) for m in bob["memberships"]) == [("elsewhere", "auditor"), (ORG, "admin")]
    run(d, "admin", "user", "join", "bob", "--org", "elsewhere", "--role", "clinician")
    bob = {u["username"]: u for u in run_json(d, "admin", "user", "list")}["bob"]
    assert ("elsewhere", "clinician") in [(m["org"], m["role"]) for m in bob["memberships"]]
    assert len(bob["memberships"]) == 2
    assert run(d, "admin", "user", "join", "bob", "--org", "nowhere", "--role", "admin", check=False).returncode != 0
    run(d, "admin", "user", "leave", "bob", "--org", "elsewhere")
    assert run(d, "admin", "user", "leave", "bob", "--org", ORG, check=False).returncode != 0
    server = Server(d, extra_env={"VESALIUS__AUTH__REQUIRED": "true"})
    try:
        login = f"{server.base}/api/v1/auth/login"
        for _ in range(5):
            r = requests.post(login, json={"username": "bob", "password": "wrong wrong wrong"}, timeout=30)
            assert r.status_code == 401
        r = requests.post(login, json={"username": "bob", "password": PASSWORD}, timeout=30)
        assert r.status_code == 429, r.text
        run(d, "admin", "user", "unlock", "bob")
        r = requests.post(login, json={"username": "bob", "password": PASSWORD}, timeout=30)
        assert r.status_code == 200, r.text
    finally:
        server.kill()
    events = [e["event"] for e in run_json(d, "audit", "search", "--limit", "1000")]
    done = {e["action"] for e in events} | {e["details"].get("change") for e in events}
    for a in ("membership-set", "membership-remove", "user-unlock"):
        assert a in done, done


def test_the_server_signs_checkpoints(site, tmp_path):
    """`[audit] checkpoint_interval_secs`: the running server signs the chain's head
    periodically and once more at shutdown, so `audit verify` finds no unsigned tail."""
    import time
    d = tmp_path / "data"
    shutil.copytree(site["dir"], d)
    before = run_json(d, "audit", "verify")["checkpoints_checked"]
    server = Server(d, extra_env={"VESALIUS__AUTH__REQUIRED": "true",
                                  "VESALIUS__AUDIT__CHECKPOINT_INTERVAL_SECS": "1"})
    try:
        requests.post(f"{server.base}/api/v1/auth/login", json={"username": "bob", "password": "nope nope nope"},
                      timeout=30)
        deadline = time.time() + 20
        while time.time() < deadline:
            v = run_json(d, "audit", "verify")
            if v["checkpoints_checked"] > before and v["unsigned_tail"] == 0:
                break
            time.sleep(0.3)
        assert v["checkpoints_checked"] > before and v["unsigned_tail"] == 0, v
        requests.post(f"{server.base}/api/v1/auth/login", json={"username": "bob", "password": "nope nope nope"},
                      timeout=30)
    finally:
        assert server.stop() == 0
    v = run_json(d, "audit", "verify")
    assert v["ok"] and v["unsigned_tail"] == 0, v


def tampered(site, tmp_path, sql):
    """A copy of the site whose index.db had the audit triggers dropped and `sql` run."""
    d = tmp_path / "data"
    shutil.copytree(site["dir"], d)
    db = sqlite3.connect(d / "index.db")
    triggers = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit'")]
    assert triggers, "the audit table should have append-only triggers"
    for t in triggers:
        db.execute(f'DROP TRIGGER "{t}"')
    db.executescript(sql)
    db.commit()
    db.close()
    return d


def broken(d):
    """`audit verify` on d: must fail; returns (problems from --json, text output)."""
    p = run(d, "audit", "verify", "--json", check=False)
    assert p.returncode != 0, p.stdout
    report = json.loads(p.stdout)
    assert not report["ok"]
    text = run(d, "audit", "verify", check=False)
    assert text.returncode != 0
    return [(x["seq"], x["kind"]) for x in report["problems"]], text.stdout + text.stderr


def test_edited_record_is_found(site, tmp_path):
    d = tampered(site, tmp_path, "UPDATE audit SET event = replace(event, 'alice', 'mallory') WHERE seq = 3;")
    problems, text = broken(d)
    assert problems[0] == (3, "edited"), problems
    assert "seq 3: edited" in text


def test_deleted_record_is_found(site, tmp_path):
    d = tampered(site, tmp_path, "DELETE FROM audit WHERE seq = 4;")
    problems, text = broken(d)
    assert (4, "deleted") in problems, problems
    assert "seq 4: deleted" in text


def test_checkpoint_catches_a_cut_tail(site, tmp_path):
    d = tmp_path / "signed"
    shutil.copytree(site["dir"], d)
    cp = run_json(d, "audit", "checkpoint")
    assert cp["alg"] == "ed25519" and len(cp["key_id"]) == 64
    assert oct((d / "site.key").stat().st_mode & 0o777) == "0o600"
    assert run_json(d, "audit", "checkpoint") is None  # the head is signed already
    report = run_json(d, "audit", "verify")
    assert report["ok"] and report["last_signed_seq"] == cp["seq"] and report["unsigned_tail"] == 0
    # Trusting only another key: the checkpoint's signature is refused.
    p = run(d, "audit", "verify", "--json", "--key", "00" * 32, check=False)
    assert p.returncode != 0
    assert {x["kind"] for x in json.loads(p.stdout)["problems"]} == {"bad-checkpoint-signature"}
    # Remove the signed head: a plain hash chain cannot tell, the checkpoint can.
    db = sqlite3.connect(d / "index.db")
    for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit'").fetchall():
        db.execute(f'DROP TRIGGER "{t}"')
    db.execute("DELETE FROM audit WHERE seq >= ?", (cp["seq"],))
    db.commit()
    db.close()
    problems, _ = broken(d)
    assert (cp["seq"], "truncated") in problems, problems


def test_search_filters(site):
    d = site["dir"]
    created = run_json(d, "audit", "search", "--action", "token-create")
    assert created and all(e["event"]["action"] == "token-create" for e in created)
    seqs = [e["seq"] for e in created]
    assert seqs == sorted(seqs, reverse=True)  # newest first
    assert run_json(d, "audit", "search", "--since", "1d", "--action", "token-create") == created
    assert run_json(d, "audit", "search", "--until", "2000-01-01") == []
    assert run_json(d, "audit", "search", "--study", "1.2.3.4") == []
    assert run_json(d, "audit", "search", "--patient", "HOSP/12345") == []
    assert len(run_json(d, "audit", "search", "--limit", "2")) == 2
    # Reading the trail is itself audited.
    assert run_json(d, "audit", "search", "--action", "audit-read", "--limit", "1")


def test_fhir_export(site, tmp_path):
    out = tmp_path / "audit.ndjson"
    p = run(site["dir"], "audit", "export", "--format", "fhir", "--out", str(out))
    assert "FHIR AuditEvent" in p.stderr
    lines = out.read_text().splitlines()
    resources = [json.loads(x) for x in lines]
    assert len(resources) >= 10
    assert all(r["resourceType"] == "AuditEvent" for r in resources)
    assert any(r.get("subtype", [{}])[0].get("code") == "110137" for r in resources)  # user security attributes
    fhir = pytest.importorskip("fhir.resources", reason="PyPI fhir.resources is not installed")  # noqa: F841
    from fhir.resources.R4B.auditevent import AuditEvent

    for line in lines:
        ev = AuditEvent.model_validate_json(line)
        assert ev.agent[0].requestor is True
