"""Transport security against real third-party TLS stacks: `vesalius admin cert self-signed`,
HTTPS checked by curl (OpenSSL), the security headers, and DICOM TLS (PS3.15 B.1) with DCMTK's
OpenSSL-based echoscu/storescu/findscu and pynetdicom (C-GET over Python's ssl), including client certificates signed by a CA made here with
the openssl CLI."""

import io
import os
import re
import stat
import ssl
import subprocess

import pydicom
import pydicom.data
import pytest
import requests
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelGet

from conftest import BIN, Server, dcmtk

DCMTK_ENV = dict(os.environ, TCP_NODELAY="1")


def run(cmd, **kw):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, **kw)


def self_signed(out, *hostnames):
    args = [BIN, "admin", "cert", "self-signed", "--out", out]
    for h in hostnames:
        args += ["--hostname", h]
    r = run(args)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture
def certs(tmp_path):
    """The server's self-signed certificate and key (what a quick start uses)."""
    out = tmp_path / "certs"
    printed = self_signed(out, "pacs.example.org")
    cert, key = out / "cert.pem", out / "key.pem"
    assert str(cert) in printed and str(key) in printed
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    # The printed fingerprint is the one OpenSSL computes.
    fp = re.search(r"SHA-256\s+:\s+([0-9A-F:]+)", printed).group(1)
    r = run(["openssl", "x509", "-in", cert, "-noout", "-fingerprint", "-sha256"])
    assert r.stdout.strip().split("=", 1)[1] == fp
    text = run(["openssl", "x509", "-in", cert, "-noout", "-text"]).stdout
    for san in ("DNS:localhost", "IP Address:127.0.0.1", "DNS:pacs.example.org"):
        assert san in text
    # Refuses to overwrite an existing key.
    assert run([BIN, "admin", "cert", "self-signed", "--out", out]).returncode != 0
    return cert, key


@pytest.fixture
def client_ca(tmp_path):
    """A CA and a client certificate it signed, made with the openssl CLI."""
    d = tmp_path / "ca"
    d.mkdir()
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    r = run(["openssl", "req", "-x509", *ec, "-keyout", d / "ca.key", "-out", d / "ca.pem", "-days", "2",
             "-subj", "/CN=Interop Test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    assert r.returncode == 0, r.stderr
    r = run(["openssl", "req", "-new", *ec, "-keyout", d / "client.key", "-out", d / "client.csr",
             "-subj", "/CN=MODALITY"])
    assert r.returncode == 0, r.stderr
    (d / "ext.cnf").write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                               "extendedKeyUsage=clientAuth\n")
    r = run(["openssl", "x509", "-req", "-in", d / "client.csr", "-CA", d / "ca.pem", "-CAkey", d / "ca.key",
             "-CAcreateserial", "-out", d / "client.pem", "-days", "2", "-extfile", d / "ext.cnf"])
    assert r.returncode == 0, r.stderr
    return d / "ca.pem", d / "client.pem", d / "client.key"


def tls_server(tmp_path, certs, name="data", config_text=None):
    cert, key = certs
    srv = Server(tmp_path / name, config_text=config_text,
                 extra_args=["--tls-cert", cert, "--tls-key", key, "--dicom-tls-addr", "127.0.0.1:0"])
    assert srv.scheme == "https" and srv.dicom_tls_port, "the TLS addresses were not printed"
    return srv


def curl(*args):
    return run(["curl", "-sS", "--max-time", "20", "-D", "-", "-o", "/dev/null", *args])


def test_https_with_security_headers_and_no_plain_http(tmp_path, certs):
    cert, _ = certs
    srv = tls_server(tmp_path, certs)
    try:
        r = curl("--cacert", cert, f"https://127.0.0.1:{srv.http_port}/healthz")
        assert r.returncode == 0, r.stderr
        headers = r.stdout.lower()
        assert re.match(r"http/1\.1 200", headers), headers
        for h in ("strict-transport-security: max-age=31536000", "x-content-type-options: nosniff",
                  "referrer-policy: no-referrer", "x-frame-options: deny",
                  "content-security-policy: frame-ancestors 'none'"):
            assert h in headers, f"{h} missing in {headers}"
        # The host name in the certificate works too (curl checks it against the SANs).
        r = curl("--cacert", cert, "--resolve", f"localhost:{srv.http_port}:127.0.0.1",
                 f"https://localhost:{srv.http_port}/readyz")
        assert r.returncode == 0, r.stderr
        # Without trusting the certificate, curl refuses; plain HTTP to the port fails.
        assert curl(f"https://127.0.0.1:{srv.http_port}/healthz").returncode != 0
        assert curl(f"http://127.0.0.1:{srv.http_port}/healthz").returncode != 0
        # DICOMweb over HTTPS with another client stack (Python requests, OpenSSL).
        assert requests.get(f"{srv.dicomweb}/studies", verify=str(cert), timeout=20).status_code in (200, 204)
    finally:
        assert srv.stop() == 0, "graceful shutdown with TLS failed"


def test_plain_http_has_headers_but_no_hsts(server):
    r = curl(f"{server.base}/healthz")
    headers = r.stdout.lower()
    assert "x-content-type-options: nosniff" in headers and "x-frame-options: deny" in headers
    assert "strict-transport-security" not in headers
    assert server.dicom_tls_port is None  # no certificate, no DICOM TLS listener


def test_dicom_tls_with_dcmtk_store_and_retrieve(tmp_path, certs):
    cert, _ = certs
    srv = tls_server(tmp_path, certs)
    try:
        port = str(srv.dicom_tls_port)
        tls = ["+tla", "+cf", cert]  # TLS without a client certificate, verifying the server's
        r = run([dcmtk("echoscu"), "-aec", "VESALIUS", *tls, "127.0.0.1", port], env=DCMTK_ENV)
        assert r.returncode == 0, r.stdout + r.stderr
        # Plain DICOM on the TLS port fails; the plain port still works.
        r = run([dcmtk("echoscu"), "-to", "5", "-aec", "VESALIUS", "127.0.0.1", port], env=DCMTK_ENV)
        assert r.returncode != 0
        r = run([dcmtk("echoscu"), "-aec", "VESALIUS", "127.0.0.1", srv.dicom_port], env=DCMTK_ENV)
        assert r.returncode == 0, r.stdout + r.stderr
        # A client that does not trust our certificate refuses the server.
        other = tmp_path / "other"
        self_signed(other)
        r = run([dcmtk("echoscu"), "-aec", "VESALIUS", "+tla", "+cf", other / "cert.pem", "127.0.0.1", port],
                env=DCMTK_ENV)
        assert r.returncode != 0

        # C-STORE over TLS, then retrieval over HTTPS (WADO-URI) and DICOM TLS (C-GET).
        src = pydicom.data.get_testdata_file("CT_small.dcm")
        ds = pydicom.dcmread(src)
        r = run([dcmtk("storescu"), "-aec", "VESALIUS", *tls, "127.0.0.1", port, src], env=DCMTK_ENV)
        assert r.returncode == 0, r.stdout + r.stderr
        uids = dict(studyUID=ds.StudyInstanceUID, seriesUID=ds.SeriesInstanceUID, objectUID=ds.SOPInstanceUID)
        resp = requests.get(f"{srv.base}/wado", params=dict(requestType="WADO", contentType="application/dicom",
                                                           **uids), verify=str(cert), timeout=20)
        assert resp.status_code == 200, resp.text
        got = pydicom.dcmread(io.BytesIO(resp.content))
        assert got.SOPInstanceUID == ds.SOPInstanceUID and got.PixelData == ds.PixelData
        # C-FIND over TLS with DCMTK (Debian's getscu/movescu have no TLS options).
        r = run([dcmtk("findscu"), "-aec", "VESALIUS", *tls, "-S", "-k", "QueryRetrieveLevel=STUDY",
                 "-k", f"StudyInstanceUID={ds.StudyInstanceUID}", "-k", "PatientName",
                 "127.0.0.1", port], env=DCMTK_ENV)
        assert r.returncode == 0 and ds.StudyInstanceUID in r.stdout + r.stderr, r.stdout + r.stderr
        # C-GET over TLS with pynetdicom (Python's ssl module, OpenSSL).
        got = c_get_over_tls(port, cert, ds.StudyInstanceUID)
        assert [g.SOPInstanceUID for g in got] == [ds.SOPInstanceUID]
        assert got[0].PixelData == ds.PixelData
    finally:
        assert srv.stop() == 0


def c_get_over_tls(port, cafile, study):
    ctx = ssl.create_default_context(cafile=str(cafile))
    ae = AE(ae_title="TLSGET")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage)
    got = []

    def on_store(event):
        got.append(event.dataset)
        return 0x0000

    assoc = ae.associate("127.0.0.1", int(port), ae_title="VESALIUS", tls_args=(ctx, "localhost"),
                         ext_neg=[build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.StudyInstanceUID = study
    statuses = [s.Status for s, _ in assoc.send_c_get(q, StudyRootQueryRetrieveInformationModelGet) if s]
    assoc.release()
    assert statuses and statuses[-1] == 0x0000, statuses
    return got


def test_dicom_tls_client_certificates(tmp_path, certs, client_ca):
    cert, _ = certs
    ca, client_cert, client_key = client_ca
    srv = tls_server(tmp_path, certs, config_text=f'[dicom]\ntls_client_ca = "{ca}"\n')
    try:
        port = str(srv.dicom_tls_port)
        echo = [dcmtk("echoscu"), "-to", "10", "-aec", "VESALIUS"]
        # Without a client certificate: refused.
        r = run([*echo, "+tla", "+cf", cert, "127.0.0.1", port], env=DCMTK_ENV)
        assert r.returncode != 0, r.stdout + r.stderr
        # With a certificate the configured CA did not sign (the server's own self-signed one): refused.
        other = tmp_path / "other"
        self_signed(other)
        r = run([*echo, "+tls", other / "key.pem", other / "cert.pem", "+cf", cert, "127.0.0.1", port],
                env=DCMTK_ENV)
        assert r.returncode != 0, r.stdout + r.stderr
        # With a certificate signed by the configured CA: served, storage too.
        mine = ["+tls", client_key, client_cert, "+cf", cert]
        r = run([*echo, *mine, "127.0.0.1", port], env=DCMTK_ENV)
        assert r.returncode == 0, r.stdout + r.stderr
        src = pydicom.data.get_testdata_file("MR_small.dcm")
        r = run([dcmtk("storescu"), "-aec", "VESALIUS", *mine, "127.0.0.1", port, src], env=DCMTK_ENV)
        assert r.returncode == 0, r.stdout + r.stderr
        stats = requests.get(f"{srv.base}/api/v1/stats", verify=str(cert), timeout=20).json()
        assert stats["instances"] == 1
        # HTTPS does not ask browsers for client certificates.
        assert curl("--cacert", cert, f"{srv.base}/healthz").returncode == 0
    finally:
        assert srv.stop() == 0
