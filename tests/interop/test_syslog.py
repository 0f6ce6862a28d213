"""The audit trail forwarded as DICOM audit messages (PS3.15 A.5) in RFC 5424 syslog messages over
TLS (RFC 5425, PS3.15 A.6) to the real Debian rsyslog (`rsyslog` + `rsyslog-gnutls`): rsyslogd is
started here as a child with the gtls stream driver, mutual x509/name authentication and
certificates made here with the openssl CLI; the server's first-start set-up, a failed and a
successful login, a QIDO-RS query and a STOW-RS store must arrive as well-formed XML with the
expected event ids, outcomes and participants, one message per audit record, in seq order; then
rsyslog is stopped, events are made while it is down, and after it is back every record has
arrived (at least once).

Waits: VESALIUS_SYSLOG_TIMEOUT (seconds, default 30) bounds each wait; the forwarder polls every
100 ms and confirms after 500 ms here.
"""

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
import xml.etree.ElementTree as ET

import pydicom
import pydicom.data
import pytest
import requests

from conftest import Server

RSYSLOGD = shutil.which("rsyslogd", path="/usr/sbin:/usr/bin")
GTLS = "/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so"
TIMEOUT = float(os.environ.get("VESALIUS_SYSLOG_TIMEOUT", "30"))
PASSWORD = "correct horse battery"

pytestmark = pytest.mark.skipif(
    RSYSLOGD is None or not os.path.exists(GTLS),
    reason="Debian rsyslog and rsyslog-gnutls are not installed (scripts/install-deps test)")


def run(cmd):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    return r


def make_pki(d):
    """A CA, the collector's certificate (localhost, 127.0.0.1) and our client certificate."""
    d.mkdir()
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run(["openssl", "req", "-x509", *ec, "-keyout", d / "ca.key", "-out", d / "ca.pem", "-days", "2",
         "-subj", "/CN=Syslog Interop CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    for name, subject, ext in [
        ("server", "/CN=localhost",
         "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
        ("client", "/CN=vesalius.test",
         "subjectAltName=DNS:vesalius.test\nextendedKeyUsage=clientAuth\n"),
    ]:
        run(["openssl", "req", "-new", *ec, "-keyout", d / f"{name}.key", "-out", d / f"{name}.csr",
             "-subj", subject])
        (d / f"{name}.ext").write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n" + ext)
        run(["openssl", "x509", "-req", "-in", d / f"{name}.csr", "-CA", d / "ca.pem", "-CAkey", d / "ca.key",
             "-CAcreateserial", "-out", d / f"{name}.pem", "-days", "2", "-extfile", d / f"{name}.ext"])
    return d


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Rsyslog:
    """rsyslogd in the foreground, receiving RFC 5425 on 127.0.0.1:port and writing each DICOM
    audit message as a JSON line (the header fields and the MSG) to `out`."""

    def __init__(self, work, pki, port):
        self.work, self.port = work, port
        self.out = work / "audit.jsonl"
        self.conf = work / "rsyslog.conf"
        self.pidfile = work / "rsyslogd.pid"
        self.log = work / "rsyslogd.log"
        (work / "spool").mkdir(exist_ok=True)
        fields = [("pri", "pri"), ("facility", "syslogfacility"), ("severity", "syslogseverity"),
                  ("timestamp", "timereported:::date-rfc3339"), ("hostname", "hostname"),
                  ("app", "app-name"), ("procid", "procid"), ("msgid", "msgid"),
                  ("sd", "structured-data"), ("msg", "msg"), ("peer", "fromhost-ip")]
        template = ""
        for i, (key, prop) in enumerate(fields):
            sep = "{" if i == 0 else ","
            name, _, fmt = prop.partition(":::")
            extra = f' dateformat="{fmt[5:]}"' if fmt.startswith("date-") else ""
            template += f'  constant(value="{sep}\\"{key}\\":\\"")\n'
            template += f'  property(name="{name}" format="json"{extra})\n'
            template += '  constant(value="\\"")\n'
        template += '  constant(value="}\\n")\n'
        self.conf.write_text(f"""
global(
  workDirectory="{work / 'spool'}"
  maxMessageSize="64k"
  defaultNetstreamDriver="gtls"
  defaultNetstreamDriverCAFile="{pki / 'ca.pem'}"
  defaultNetstreamDriverCertFile="{pki / 'server.pem'}"
  defaultNetstreamDriverKeyFile="{pki / 'server.key'}"
)
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1"
       StreamDriver.AuthMode="x509/name" PermittedPeer=["vesalius.test"])
input(type="imtcp" address="127.0.0.1" port="{port}")
template(name="audit" type="list") {{
{template}}}
if $msgid == "DICOM+RFC3881" then {{
  action(type="omfile" file="{self.out}" template="audit")
}} else {{
  action(type="omfile" file="{work / 'other.log'}")
}}
""")
        self.proc = None

    def start(self):
        self.logf = open(self.log, "a")
        self.proc = subprocess.Popen([RSYSLOGD, "-n", "-f", str(self.conf), "-i", str(self.pidfile)],
                                     stdout=self.logf, stderr=subprocess.STDOUT)
        deadline = time.time() + TIMEOUT
        while time.time() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            if os.path.exists(self.pidfile) and self.listening():
                return
            time.sleep(0.1)
        raise AssertionError(f"rsyslogd did not listen: {self.log.read_text()}")

    def listening(self):
        # /proc/net/tcp: the local port in hex, state 0A (LISTEN); connecting would log a TLS error.
        port = f":{self.port:04X}"
        with open("/proc/net/tcp") as f:
            return any(line.split()[1].endswith(port) and line.split()[3] == "0A"
                       for line in f.readlines()[1:])

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.logf.close()
        self.proc = None

    def messages(self):
        if not self.out.exists():
            return []
        return [json.loads(line) for line in self.out.read_text().splitlines() if line.strip()]


def seq(m):
    return int(re.search(r'\[meta sequenceId="(\d+)"\]', m["sd"]).group(1))


def xml(m):
    text = m["msg"].lstrip(" ").lstrip("\ufeff")
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?><AuditMessage>'), text[:120]
    return ET.fromstring(text.encode())


def trail(data_dir):
    """(seq, event) of every audit record, read with Python's sqlite3."""
    con = sqlite3.connect(f"file:{data_dir / 'index.db'}?mode=ro", uri=True)
    try:
        return [(s, json.loads(e)) for s, e in con.execute("SELECT seq, event FROM audit ORDER BY seq")]
    finally:
        con.close()


def wait_until(what, check):
    deadline = time.time() + TIMEOUT
    while time.time() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def event_of(root):
    ev = root.find("EventIdentification")
    types = [t.get("csd-code") for t in ev.findall("EventTypeCode")]
    return ev.find("EventID").get("csd-code"), types, ev.get("EventActionCode"), ev.get("EventOutcomeIndicator")


def stow(base, session, csrf, path):
    data = path.read_bytes()
    boundary = "vesalius-syslog-test"
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data
            + f"\r\n--{boundary}--\r\n".encode())
    return session.post(f"{base}/dicom-web/studies", data=body, headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json", "X-CSRF-Token": csrf})


def test_audit_trail_reaches_rsyslog_over_tls(tmp_path):
    pki = make_pki(tmp_path / "pki")
    port = free_port()
    rsyslog = Rsyslog(tmp_path, pki, port)
    rsyslog.start()
    config = f"""
[audit.syslog]
addr = "127.0.0.1:{port}"
transport = "tls"
tls_ca = "{pki / 'ca.pem'}"
tls_server_name = "localhost"
tls_cert = "{pki / 'client.pem'}"
tls_key = "{pki / 'client.key'}"
hostname = "vesalius-test"
source_id = "VESALIUS-TEST"
enterprise_site = "Interop Hospital"
poll_ms = 100
confirm_ms = 500
max_backoff_ms = 1000
"""
    srv = Server(tmp_path / "data", extra_env={"VESALIUS__AUTH__REQUIRED": "true"}, config_text=config)
    try:
        link = None
        for _ in range(30):
            line = srv.proc.stdout.readline()
            m = re.search(r"first start\s+:.*(https?://\S+/setup\?token=\S+)", line)
            if m:
                link = m.group(1)
            if "audit syslog" in line:
                assert f"127.0.0.1:{port} (TLS)" in line
                break
        assert link, "the first start prints a set-up link"
        token = link.split("token=", 1)[1]
        base = srv.base
        r = requests.post(f"{base}/api/v1/auth/setup", json={"token": token, "password": PASSWORD})
        assert r.status_code == 200, r.text
        r = requests.post(f"{base}/api/v1/auth/login", json={"username": "admin", "password": "wrong password!"})
        assert r.status_code == 401, r.text
        s = requests.Session()
        r = s.post(f"{base}/api/v1/auth/login", json={"username": "admin", "password": PASSWORD})
        assert r.status_code == 200, r.text
        csrf = r.json()["csrf"]
        ct = pydicom.data.get_testdata_file("CT_small.dcm", read=False)
        ds = pydicom.dcmread(ct)
        r = stow(base, s, csrf, __import__("pathlib").Path(ct))
        assert r.status_code == 200, r.text
        r = s.get(f"{base}/dicom-web/studies", params={"PatientID": ds.PatientID})
        assert r.status_code == 200, r.text

        def have(actions):
            records = trail(srv.data_dir)
            got = {seq(m) for m in rsyslog.messages()}
            wanted = {a for _, e in records for a in [e["action"]]}
            return records if actions <= wanted and got >= {s for s, _ in records} else None

        records = wait_until("every record at rsyslog",
                             lambda: have({"setup-start", "login-failed", "login", "store", "query"}))
        msgs = rsyslog.messages()
        # One message per record, in seq order (no collector restart yet: no duplicates).
        seqs = [seq(m) for m in msgs]
        assert seqs == sorted(seqs) and len(seqs) == len(set(seqs)), seqs
        assert seqs[: len(records)] == [s for s, _ in records]
        by_seq = {seq(m): m for m in msgs}
        for s_, e in records:
            m = by_seq[s_]
            assert m["msgid"] == "DICOM+RFC3881" and m["app"] == "vesalius"
            assert m["hostname"] == "vesalius-test" and m["peer"] == "127.0.0.1"
            assert m["facility"] == "10", m  # authpriv
            assert m["severity"] == ("5" if e["outcome"] == "success" else "4"), m
            assert 'origin software="Vesalius"' in m["sd"]
            root = xml(m)
            src = root.find("AuditSourceIdentification")
            assert src.get("AuditSourceID") == "VESALIUS-TEST"
            assert src.get("AuditEnterpriseSiteID") == "Interop Hospital"
            parts = root.findall("ActiveParticipant")
            assert [p.get("UserIsRequestor") for p in parts].count("true") == 1
            assert parts[1].get("AlternativeUserID") == "AETITLES=VESALIUS"
            assert root.find("EventIdentification/EventOutcomeDescription").text.startswith(e["action"])

        def find(action, outcome="success"):
            for s_, e in records:
                if e["action"] == action and e["outcome"] == outcome:
                    return e, xml(by_seq[s_])
            raise AssertionError(f"no {action} {outcome}")

        e, root = find("login-failed", "denied")
        assert event_of(root) == ("110114", ["110122"], "E", "4")
        who = root.findall("ActiveParticipant")[0]
        assert who.get("UserID") == "admin" and who.get("UserIsRequestor") == "true"
        # The source address, as the trail has it (the HTTP session endpoints record none yet).
        ip = e["source"].rsplit(":", 1)[0] if e["source"] else None
        assert who.get("NetworkAccessPointID") == ip, e
        assert who.get("NetworkAccessPointTypeCode") == ("2" if ip else None)

        e, root = find("login")
        assert event_of(root) == ("110114", ["110122"], "E", "0")
        assert root.findall("ActiveParticipant")[0].get("UserName") == "admin"

        e, root = find("store")
        assert event_of(root) == ("110104", [], "C", "0")
        objs = {o.find("ParticipantObjectIDTypeCode").get("csd-code"): o
                for o in root.findall("ParticipantObjectIdentification")}
        patient, study = objs["2"], objs["110180"]
        assert patient.get("ParticipantObjectID").split("^")[0] == ds.PatientID
        assert (patient.get("ParticipantObjectTypeCode"), patient.get("ParticipantObjectTypeCodeRole")) == ("1", "1")
        assert study.get("ParticipantObjectID") == ds.StudyInstanceUID
        assert (study.get("ParticipantObjectTypeCode"), study.get("ParticipantObjectTypeCodeRole")) == ("2", "3")
        assert study.find("ParticipantObjectIDTypeCode").get("originalText") == "Study Instance UID"
        roles = [r.get("csd-code") for r in root.findall("ActiveParticipant")[0].findall("RoleIDCode")]
        assert "110153" in roles  # the sender: Source Role ID

        e, root = find("query")
        assert event_of(root) == ("110112", [], "E", "0")
        q = [o for o in root.findall("ParticipantObjectIdentification")
             if o.find("ParticipantObjectIDTypeCode").get("csd-code") == "110181"][0]
        assert q.get("ParticipantObjectID") == "1.2.840.10008.5.1.4.1.2.2.1"
        import base64
        asked = json.loads(base64.b64decode(q.find("ParticipantObjectQuery").text))
        assert ds.PatientID in json.dumps(asked["keys"])

        e, root = find("setup-start")
        assert event_of(root) == ("110113", ["110129"], "E", "0")

        # The collector goes away; events keep coming; nothing is lost when it is back.
        rsyslog.stop()
        before = len(rsyslog.messages())
        head_before = records[-1][0]
        for _ in range(3):
            r = requests.post(f"{base}/api/v1/auth/login", json={"username": "nobody", "password": "x" * 12})
            assert r.status_code == 401
        assert s.get(f"{base}/dicom-web/studies", params={"PatientID": "none"}).status_code in (200, 204)
        # Query events are appended off the response path: wait for the fourth.
        down = wait_until("the events made while rsyslog is down", lambda: (
            lambda d: d if len(d) >= 4 else None)([(s_, e) for s_, e in trail(srv.data_dir) if s_ > head_before]))
        assert {e["action"] for _, e in down} >= {"login-failed", "query"}, down
        time.sleep(1.0)  # the forwarder notices and backs off
        assert len(rsyslog.messages()) == before
        rsyslog.start()

        def complete():
            records = trail(srv.data_dir)
            got = {seq(m) for m in rsyslog.messages()}
            return records if got >= {s for s, _ in records} else None

        records = wait_until("the events made while rsyslog was down", complete)
        after = rsyslog.messages()[before:]
        new_seqs = [seq(m) for m in after]
        assert new_seqs == sorted(new_seqs), new_seqs
        for s_, e in down:
            assert s_ in new_seqs
            root = xml([m for m in after if seq(m) == s_][0])
            if e["action"] == "login-failed":
                assert event_of(root) == ("110114", ["110122"], "E", "4")
                assert root.findall("ActiveParticipant")[0].get("UserID") == "nobody"
        # Exactly what the trail holds, nothing else (duplicates of unconfirmed records allowed).
        assert {seq(m) for m in rsyslog.messages()} == {s_ for s_, _ in records}
    finally:
        srv.stop()
        rsyslog.stop()
    # Nothing but DICOM audit messages came in (no stray plain-text or failed-TLS input).
    other = tmp_path / "other.log"
    stray = [line for line in (other.read_text().splitlines() if other.exists() else [])
             if "imtcp" in line and "vesalius" in line]
    assert not stray, stray
