"""Issue 6, alerts, black box: a hub and a spoke (`vesalius serve` each, linked with `vesalius
admin peer add`); a stroke route at the spoke sends CT heads to the hub at priority 100. At the
hub an administrator makes a stroke-arrival rule that escalates to bob; alice subscribes by
e-mail, webhook and in the app, bob by e-mail for escalations only. A real SMTP server (aiosmtpd,
from PyPI) and a Python http.server on loopback receive the mail and the webhook, whose
HMAC-SHA256 signature is verified here. The first alert is not acknowledged and escalates to bob;
the second is acknowledged by alice in time and does not."""

import asyncio
import hashlib
import hmac
import json
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.request
from email import message_from_bytes
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pydicom
import pytest
from aiosmtpd.smtp import SMTP

from conftest import BIN, Server, caller, dcmtk
from test_exchange_faults import TCP, admin, exchange_config, public_key

HUB_ORG = "stroke-centre"
SPOKE_ORG = "district"
PASSWORD = "alerts-test-pw-2026"
SECRET = "webhook-secret-0123456789"
ESCALATE_MS = 4000


class Mailbox:
    """aiosmtpd's SMTP protocol on an asyncio server bound to 127.0.0.1:0, in its own thread."""

    def __init__(self):
        self.messages = []  # (rcpt_tos, email.message.Message)
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        box = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                box.messages.append((list(envelope.rcpt_tos),
                                     message_from_bytes(envelope.original_content, policy=email_policy)))
                return "250 OK"

        def run():
            asyncio.set_event_loop(self.loop)
            self.server = self.loop.run_until_complete(
                self.loop.create_server(lambda: SMTP(Handler(), hostname="mail.test"), "127.0.0.1", 0))
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(10)

    def to(self, address):
        return [m for rcpt, m in self.messages if address in rcpt]

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class Webhook:
    """A webhook receiver on 127.0.0.1:0 that refuses its first call with 500 (to be retried)."""

    def __init__(self):
        self.calls = []  # (headers, body, status answered)
        hook = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = 500 if not hook.calls else 204
                hook.calls.append(({k.lower(): v for k, v in self.headers.items()}, body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/vesalius"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def verify(headers, body):
    """What a receiver does (docs/alerts.md): HMAC-SHA256 over "{timestamp}.{body}"."""
    ts = headers["x-vesalius-timestamp"]
    want = "v1=" + hmac.new(SECRET.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(want, headers["x-vesalius-signature"]), headers
    assert abs(time.time() - int(ts)) < 300


class Session:
    def __init__(self, server, username):
        self.server = server
        req = urllib.request.Request(server.base + "/api/v1/auth/login", method="POST",
                                     data=json.dumps({"username": username, "password": PASSWORD}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            self.csrf = json.loads(r.read())["csrf"]
            self.cookie = next(v for k, v in r.headers.items() if k.lower() == "set-cookie"
                               and v.startswith("vesalius_session=")).split(";")[0]

    def call(self, method, path, body=None):
        req = urllib.request.Request(self.server.base + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", "Cookie": self.cookie,
                                              "X-CSRF-Token": self.csrf})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                data = r.read()
                return r.status, json.loads(data) if data else None
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")


def wait_for(what, check, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def synth(out, seed):
    subprocess.run([BIN, "synth", "--out", str(out), "--seed", str(seed), "--kinds", "ct-head", "--slices", "3"],
                   check=True, capture_output=True, timeout=120)
    files = sorted(str(p) for p in out.rglob("*.dcm"))
    assert files
    return files


def store(server, files):
    r = subprocess.run([dcmtk("storescu"), "-aet", "STORESCU", "-aec", "VESALIUS", "127.0.0.1",
                        str(server.dicom_port), *files], env=TCP, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def user(data_dir, name, role, email):
    p = subprocess.run([BIN, "admin", "user", "create", "--org", HUB_ORG, "--role", role, "--username", name,
                        "--email", email, "--password-stdin", "--data-dir", str(data_dir)],
                       input=PASSWORD, capture_output=True, text=True, timeout=60,
                       env={**TCP, "VESALIUS__SITE__NAME": "hub"})
    assert p.returncode == 0, p.stderr


@pytest.fixture
def network(tmp_path):
    mail, hook, servers = Mailbox(), Webhook(), {}
    try:
        hub_dir, spoke_dir = tmp_path / "hub", tmp_path / "spoke"
        admin(hub_dir, "hub", "org", "create", HUB_ORG)
        admin(spoke_dir, "spoke", "org", "create", SPOKE_ORG)
        for name, role in (("alice", "clinician"), ("bob", "clinician"), ("boss", "admin")):
            user(hub_dir, name, role, f"{name}@hub.example")
        # The hub only receives from the spoke (its URL is not needed for that).
        admin(hub_dir, "hub", "peer", "add", "spoke", "--url", "http://127.0.0.1:9",
              "--public-key", public_key(spoke_dir, "spoke"), "--org", HUB_ORG)
        alerts = f"""
[alerts]
tick_ms = 100
monitor_interval_secs = 3600
retry_base_ms = 300
retry_max_ms = 1000
smtp_host = "127.0.0.1"
smtp_port = {mail.port}
smtp_from = "alerts@hub.example"
# The webhook receiver is on loopback (refused by default, docs/configuration.md).
webhook_allow_private = true
"""
        servers["hub"] = Server(hub_dir, config_text=exchange_config("hub") + alerts, callers=[],
                                extra_env={"VESALIUS__AUTH__REQUIRED": "true"})
        admin(spoke_dir, "spoke", "peer", "add", "hub", "--url", servers["hub"].base,
              "--public-key", public_key(hub_dir, "hub"), "--org", SPOKE_ORG)
        admin(spoke_dir, "spoke", "route", "add", "stroke", "--org", SPOKE_ORG, "--to", "peer:hub",
              "--modality", "CT", "--priority", "100")
        servers["spoke"] = Server(spoke_dir, config_text=exchange_config("spoke"),
                                  callers=[caller("STORESCU", org=SPOKE_ORG)])
        yield servers["hub"], servers["spoke"], mail, hook
    finally:
        for s in servers.values():
            s.kill()
        mail.close()
        hook.close()


def test_alerts_by_mail_and_webhook_escalate_unless_acknowledged(network, tmp_path):
    hub, spoke, mail, hook = network
    boss, alice, bob = Session(hub, "boss"), Session(hub, "alice"), Session(hub, "bob")

    # Rules are the administrators'; clear 4xx for what is wrong.
    status, body = alice.call("POST", "/api/v1/alerts/rules", {"kind": "stroke-arrival"})
    assert status == 403 and body["error"] == "forbidden", body
    status, body = boss.call("POST", "/api/v1/alerts/rules", {"kind": "earthquake"})
    assert status == 400 and body["error"] == "bad-request", body
    status, body = boss.call("POST", "/api/v1/alerts/rules", {"kind": "stroke-arrival", "escalation": ["mallory"]})
    assert status == 400 and "mallory" in body["message"], body
    status, rule = boss.call("POST", "/api/v1/alerts/rules", {
        "name": "Stroke arrivals", "kind": "stroke-arrival", "escalation": ["bob"],
        "escalate_after_ms": ESCALATE_MS})
    assert status == 201 and rule["threshold"] == 50, rule
    # An administrator's kind is hidden from users.
    status, disk = boss.call("POST", "/api/v1/alerts/rules", {"kind": "disk-low", "threshold": 0})
    assert status == 201
    status, listed = alice.call("GET", "/api/v1/alerts/rules")
    assert [r["id"] for r in listed] == [rule["id"]], listed
    status, body = alice.call("POST", "/api/v1/alerts/subscriptions", {"rule_id": disk["id"], "channel": "in-app"})
    assert status == 404, body

    # Subscriptions: alice by e-mail (her address in the directory), webhook and in the app;
    # bob by e-mail when it escalates to him.
    for sub in ({"channel": "email"}, {"channel": "webhook", "target": hook.url, "secret": SECRET},
                {"channel": "in-app"}):
        status, body = alice.call("POST", "/api/v1/alerts/subscriptions", {"rule_id": rule["id"], **sub})
        assert status == 201, body
    status, body = alice.call("POST", "/api/v1/alerts/subscriptions",
                              {"rule_id": rule["id"], "channel": "webhook", "target": "ftp://x"})
    assert status == 400, body
    status, body = bob.call("POST", "/api/v1/alerts/subscriptions",
                            {"rule_id": rule["id"], "channel": "email", "escalation_only": True})
    assert status == 201, body
    status, subs = alice.call("GET", "/api/v1/alerts/subscriptions")
    assert len(subs) == 3 and all("secret" not in s for s in subs), subs

    # A stroke CT arrives from the spoke; nobody acknowledges it.
    ct = synth(tmp_path / "ct1", 41)
    ds = pydicom.dcmread(ct[0], stop_before_pixels=True)
    uid, patient = str(ds.StudyInstanceUID), str(ds.PatientName)
    store(spoke, ct)
    alerts = wait_for("alice's alert", lambda: alice.call("GET", "/api/v1/alerts")[1]["alerts"])
    assert len(alerts) == 1
    a = alerts[0]
    assert a["kind"] == "stroke-arrival" and a["study_uid"] == uid and a["link"] == f"/view/{uid}", a
    assert a["title"] == "Stroke-priority study arrived from spoke" and a["details"]["priority"] == 100

    viewer = f"{hub.base}/view/{uid}"
    msg = wait_for("alice's mail", lambda: mail.to("alice@hub.example"))[0]
    assert "Stroke-priority study arrived from spoke" in msg["Subject"]
    assert msg["From"] == "alerts@hub.example"
    text = msg.get_content()
    assert viewer in text, text
    assert patient not in text and patient.split("^")[0] not in str(msg), "no patient name in the mail"

    # The webhook: refused once (500), retried, signed each time with the same delivery id.
    wait_for("the webhook's retry", lambda: len(hook.calls) >= 2, timeout=30)
    (h1, b1, s1), (h2, b2, s2) = hook.calls[:2]
    assert (s1, s2) == (500, 204)
    verify(h1, b1)
    verify(h2, b2)
    assert h1["x-vesalius-delivery"] == h2["x-vesalius-delivery"]
    payload = json.loads(b2)
    assert payload["type"] == "alert" and payload["alert"]["url"] == viewer, payload
    assert payload["alert"]["id"] == a["id"] and payload["alert"]["recipient"] == "alice"
    assert patient.split("^")[0].encode() not in b2
    sig = h2["x-vesalius-signature"]
    tampered = {**h2, "x-vesalius-signature": sig[:-1] + ("1" if sig.endswith("0") else "0")}
    with pytest.raises(AssertionError):
        verify(tampered, b2)
    status, deliveries = alice.call("GET", f"/api/v1/alerts/{a['id']}/deliveries")
    by_channel = {d["channel"]: d for d in deliveries}
    assert by_channel["webhook"]["state"] == "sent" and by_channel["webhook"]["attempts"] == 2, deliveries
    assert by_channel["email"]["state"] == "sent", deliveries
    assert all("secret" not in d for d in deliveries)

    # Not acknowledged in time: it escalates to bob (mail with the same link, and in his app).
    bob_mail = wait_for("bob's escalation mail", lambda: mail.to("bob@hub.example"), timeout=ESCALATE_MS / 1000 + 20)
    assert viewer in bob_mail[0].get_content()
    status, bobs = bob.call("GET", "/api/v1/alerts")
    bobs = bobs["alerts"]
    assert [(x["study_uid"], x["step"], x["chain"]) for x in bobs] == [(uid, 1, a["chain"])], bobs
    # Another user cannot acknowledge alice's alert; bob acknowledges his, the chain is done.
    status, body = bob.call("POST", f"/api/v1/alerts/{a['id']}/acknowledge")
    assert status == 404, body
    status, body = bob.call("POST", f"/api/v1/alerts/{bobs[0]['id']}/acknowledge")
    assert status == 200 and body["acknowledged"] is True and body["alert"]["acknowledged_by"] == "bob", body
    assert alice.call("GET", "/api/v1/alerts")[1]["alerts"] == [], "acknowledged for everyone in the chain"

    # A second stroke CT, acknowledged by alice at once: it does not escalate.
    ct2 = synth(tmp_path / "ct2", 42)
    uid2 = str(pydicom.dcmread(ct2[0], stop_before_pixels=True).StudyInstanceUID)
    store(spoke, ct2)
    second = wait_for("the second alert", lambda: alice.call("GET", "/api/v1/alerts")[1]["alerts"])
    assert second[0]["study_uid"] == uid2
    status, body = alice.call("POST", f"/api/v1/alerts/{second[0]['id']}/acknowledge")
    assert status == 200 and body["acknowledged"] is True, body
    status, again = alice.call("POST", f"/api/v1/alerts/{second[0]['id']}/acknowledge")
    assert status == 200 and again["acknowledged"] is False
    wait_for("alice's second mail", lambda: len(mail.to("alice@hub.example")) >= 2)
    time.sleep(ESCALATE_MS / 1000 + 2)
    assert len(mail.to("bob@hub.example")) == 1, "the acknowledged alert was not escalated"
    assert len(bob.call("GET", "/api/v1/alerts?all=true")[1]["alerts"]) == 1

    # The acknowledgements are in the audit trail.
    con = sqlite3.connect(f"file:{hub.data_dir / 'index.db'}?mode=ro", uri=True)
    try:
        acks = con.execute("SELECT actor_id, study_uid FROM audit WHERE action = 'alert-acknowledge'").fetchall()
    finally:
        con.close()
    assert sorted(s for _, s in acks) == sorted([uid, uid2]), acks


def test_administrator_alerts_from_the_monitor_and_the_outbox(tmp_path):
    """One server: a peer that never answers, a route to it that parks at the first failure, and
    a disk-low threshold above any disk: the monitor and the exchange raise the administrator's
    alerts; a clinician may not subscribe to them."""
    data = tmp_path / "site"
    admin(data, "site", "org", "create", HUB_ORG)
    user(data, "boss", "admin", "boss@hub.example")
    user(data, "alice", "clinician", "alice@hub.example")
    admin(data, "site", "peer", "add", "gone", "--url", "http://127.0.0.1:9",
          "--public-key", public_key(tmp_path / "other", "other"), "--org", HUB_ORG)
    admin(data, "site", "route", "add", "to-gone", "--org", HUB_ORG, "--to", "peer:gone", "--modality", "CT")
    cfg = exchange_config("site").replace("max_attempts = 10000", "max_attempts = 1") + """
[alerts]
tick_ms = 100
monitor_interval_secs = 1
"""
    server = Server(data, config_text=cfg, callers=[caller("STORESCU", org=HUB_ORG)],
                    extra_env={"VESALIUS__AUTH__REQUIRED": "true"})
    try:
        boss, alice = Session(server, "boss"), Session(server, "alice")
        for kind, threshold in (("peer-down", 0), ("disk-low", 10**18), ("transfer-parked", None)):
            body = {"kind": kind} if threshold is None else {"kind": kind, "threshold": threshold}
            status, rule = boss.call("POST", "/api/v1/alerts/rules", body)
            assert status == 201, rule
            status, sub = boss.call("POST", "/api/v1/alerts/subscriptions", {"rule_id": rule["id"], "channel": "in-app"})
            assert status == 201, sub
            status, body = alice.call("POST", "/api/v1/alerts/subscriptions", {"rule_id": rule["id"], "channel": "in-app"})
            assert status == 404, body
            # By default (no webhook_allow_private) a webhook into the site's network is refused.
            for target in ("http://127.0.0.1:9/hook", "http://169.254.169.254/latest/meta-data/",
                           "http://localhost/hook"):
                status, body = boss.call("POST", "/api/v1/alerts/subscriptions",
                                         {"rule_id": rule["id"], "channel": "webhook", "target": target})
                assert status == 400 and body["error"] == "bad-request", body
                assert "webhook_allow_private" in body["message"], body
        ct = synth(tmp_path / "ct", 43)
        uid = str(pydicom.dcmread(ct[0], stop_before_pixels=True).StudyInstanceUID)
        store(server, ct)

        def kinds():
            return {a["kind"]: a for a in boss.call("GET", "/api/v1/alerts")[1]["alerts"]}
        got = wait_for("the three alerts", lambda: (lambda k: k if len(k) == 3 else None)(kinds()), timeout=60)
        assert got["peer-down"]["title"].startswith("Peer gone unreachable for"), got
        assert got["peer-down"]["details"]["peer"] == "gone" and got["peer-down"]["link"] == "/worklist"
        assert got["disk-low"]["title"].startswith("Disk low:") and got["disk-low"]["details"]["free_bytes"] > 0
        assert got["transfer-parked"]["title"] == "Transfer to peer:gone parked", got
        assert got["transfer-parked"]["study_uid"] == uid and got["transfer-parked"]["link"] == f"/view/{uid}"
        # Seen again at the next rounds, each is still one alert.
        time.sleep(2.5)
        assert sorted(a["kind"] for a in boss.call("GET", "/api/v1/alerts")[1]["alerts"]) == \
            ["disk-low", "peer-down", "transfer-parked"]
        assert alice.call("GET", "/api/v1/alerts")[1]["alerts"] == []
    finally:
        server.kill()
