"""Issue 6, e-mail alerts over TLS, black box: `vesalius serve` sends an administrator's disk-low
alert (a threshold above any disk, so the monitor raises it at once) by e-mail to a real SMTP
server, aiosmtpd from PyPI, on loopback. The test makes a CA and the server's certificate (for
IP 127.0.0.1) with the openssl command line tool. Cases:

- STARTTLS (RFC 3207) required by aiosmtpd (`require_starttls`), AUTH PLAIN only over TLS
  (`auth_require_tls`): the mail arrives over TLS and the credentials were checked;
- implicit TLS (RFC 8314, the asyncio server wraps every connection): the same;
- a CA that did not sign the server's certificate: nothing is sent, the delivery fails with the
  certificate error in its `last_error`, the password never reached the server;
- a server that does not offer STARTTLS while `smtp_tls = "starttls"`: failed, no downgrade.
"""

import asyncio
import ssl
import subprocess
import threading
from email import message_from_bytes
from email.policy import default as email_policy

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from conftest import BIN, Server
from test_alerts import HUB_ORG, Session, user, wait_for
from test_exchange_faults import admin, exchange_config

SMTP_USER = "vesalius-alerts"
SMTP_PASSWORD = "smtp-pw-not-in-clear-42"


def openssl(*args, cwd):
    p = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr


def make_ca(d, name):
    """A CA certificate and key (P-256) in d/{name}.pem, d/{name}.key."""
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
            cwd=d)


def make_server_cert(d, ca):
    """The SMTP server's certificate for IP 127.0.0.1, signed by `ca`: d/server.pem, d/server.key."""
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=d)
    (d / "ext.cnf").write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                               "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d)


class TlsMailbox:
    """aiosmtpd on 127.0.0.1:0 in its own thread. `mode`: "starttls" (STARTTLS offered and
    required), "tls" (implicit TLS) or "plain" (no STARTTLS offered). AUTH PLAIN is checked
    against SMTP_USER/SMTP_PASSWORD; every attempt is recorded."""

    def __init__(self, mode, cert_dir):
        self.messages = []  # (rcpt_tos, message, under TLS, authenticated login)
        self.auth_attempts = []  # (login, password, under TLS)
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        box = self
        ctx = None
        if mode != "plain":
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(cert_dir / "server.pem", cert_dir / "server.key")

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                tls = server.transport.get_extra_info("ssl_object") is not None
                login = session.auth_data.login.decode() if session.authenticated else None
                box.messages.append((list(envelope.rcpt_tos),
                                     message_from_bytes(envelope.original_content, policy=email_policy),
                                     tls, login))
                return "250 OK"

        def authenticator(server, session, envelope, mechanism, data):
            tls = server.transport.get_extra_info("ssl_object") is not None
            ok = isinstance(data, LoginPassword)
            box.auth_attempts.append((data.login.decode() if ok else None,
                                      data.password.decode() if ok else None, tls))
            ok = ok and data.login == SMTP_USER.encode() and data.password == SMTP_PASSWORD.encode()
            return AuthResult(success=ok, auth_data=data if ok else None)

        def factory():
            if mode == "starttls":
                return SMTP(Handler(), hostname="mail.test", tls_context=ctx, require_starttls=True,
                            auth_require_tls=True, auth_required=True, authenticator=authenticator)
            # Implicit TLS: aiosmtpd sees a plain transport under asyncio's TLS, so it cannot
            # know the connection is protected (its auth_require_tls would refuse AUTH).
            return SMTP(Handler(), hostname="mail.test", auth_require_tls=False,
                        auth_required=True, authenticator=authenticator)

        def run():
            asyncio.set_event_loop(self.loop)
            ssl_arg = ctx if mode == "tls" else None
            self.server = self.loop.run_until_complete(
                self.loop.create_server(factory, "127.0.0.1", 0, ssl=ssl_arg))
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(10)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def serve_with_mail(tmp_path, box, tls, ca_file):
    data = tmp_path / "site"
    admin(data, "site", "org", "create", HUB_ORG)
    user(data, "boss", "admin", "boss@hub.example")
    cfg = exchange_config("site") + f"""
[alerts]
tick_ms = 100
monitor_interval_secs = 1
retry_base_ms = 200
retry_max_ms = 500
max_attempts = 3
smtp_host = "127.0.0.1"
smtp_port = {box.port}
smtp_tls = "{tls}"
smtp_ca_file = "{ca_file}"
smtp_username = "{SMTP_USER}"
smtp_password = "{SMTP_PASSWORD}"
smtp_from = "alerts@hub.example"
smtp_timeout_ms = 5000
"""
    server = Server(data, config_text=cfg, callers=[], extra_env={"VESALIUS__AUTH__REQUIRED": "true"})
    boss = Session(server, "boss")
    status, rule = boss.call("POST", "/api/v1/alerts/rules", {"kind": "disk-low", "threshold": 10**18})
    assert status == 201, rule
    status, sub = boss.call("POST", "/api/v1/alerts/subscriptions", {"rule_id": rule["id"], "channel": "email"})
    assert status == 201, sub
    return server, boss


def deliveries(boss):
    alerts = boss.call("GET", "/api/v1/alerts")[1]["alerts"]
    if not alerts:
        return None
    status, body = boss.call("GET", f"/api/v1/alerts/{alerts[0]['id']}/deliveries")
    assert status == 200, body
    return [d for d in body if d["channel"] == "email"]


@pytest.mark.parametrize("mode", ["starttls", "tls"])
def test_alert_mail_over_tls_with_auth(tmp_path, mode):
    certs = tmp_path / "certs"
    certs.mkdir()
    make_ca(certs, "mail-ca")
    make_server_cert(certs, "mail-ca")
    box = TlsMailbox(mode, certs)
    server = None
    try:
        server, boss = serve_with_mail(tmp_path, box, mode, certs / "mail-ca.pem")
        wait_for("the alert mail", lambda: box.messages, timeout=60)
        rcpt, msg, tls, login = box.messages[0]
        assert rcpt == ["boss@hub.example"]
        assert msg["Subject"].startswith("[Vesalius] Disk low:"), msg["Subject"]
        assert tls, "the mail went over TLS"
        assert login == SMTP_USER, "AUTH PLAIN succeeded"
        assert box.auth_attempts and all(t for _, _, t in box.auth_attempts), box.auth_attempts
        got = wait_for("sent", lambda: (lambda d: d if d and d[0]["state"] == "sent" else None)(
            deliveries(boss)))
        assert got[0]["attempts"] == 1, got
    finally:
        if server:
            server.kill()
        box.close()


def test_alert_mail_with_a_wrong_ca_is_refused(tmp_path):
    certs = tmp_path / "certs"
    certs.mkdir()
    make_ca(certs, "mail-ca")
    make_ca(certs, "other-ca")
    make_server_cert(certs, "mail-ca")
    box = TlsMailbox("starttls", certs)
    server = None
    try:
        server, boss = serve_with_mail(tmp_path, box, "starttls", certs / "other-ca.pem")
        got = wait_for("the failed delivery", lambda: (lambda d: d if d and d[0]["state"] == "failed" else None)(
            deliveries(boss)))
        err = got[0]["last_error"]
        assert "TLS handshake with 127.0.0.1" in err and "certificate" in err.lower(), err
        assert "UnknownIssuer" in err and "smtp_ca_file" in err, err
        assert got[0]["attempts"] == 1, "a certificate error is not retried"
        assert box.messages == [] and box.auth_attempts == [], "nothing, no password, reached the server"
    finally:
        if server:
            server.kill()
        box.close()


def test_alert_mail_without_starttls_offered_is_not_sent_in_clear(tmp_path):
    certs = tmp_path / "certs"
    certs.mkdir()
    make_ca(certs, "mail-ca")
    box = TlsMailbox("plain", certs)
    server = None
    try:
        server, boss = serve_with_mail(tmp_path, box, "starttls", certs / "mail-ca.pem")
        got = wait_for("the failed delivery", lambda: (lambda d: d if d and d[0]["state"] == "failed" else None)(
            deliveries(boss)))
        assert "does not offer STARTTLS" in got[0]["last_error"], got
        assert box.messages == [] and box.auth_attempts == []
    finally:
        if server:
            server.kill()
        box.close()


def test_a_password_without_tls_stops_the_server(tmp_path):
    data = tmp_path / "site"
    admin(data, "site", "org", "create", HUB_ORG)
    cfg = tmp_path / "site.toml"
    cfg.write_text('[alerts]\nsmtp_host = "127.0.0.1"\nsmtp_username = "u"\nsmtp_password = "p"\n')
    p = subprocess.run([BIN, "--config", str(cfg), "serve", "--data-dir", str(data), "--dicom-addr",
                        "127.0.0.1:0", "--http-addr", "127.0.0.1:0"], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    assert "smtp_username is set but smtp_tls = \"none\"" in p.stderr, p.stderr[-2000:]
