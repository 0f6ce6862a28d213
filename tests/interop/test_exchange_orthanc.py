"""Issue 5, interop: a plain DICOMweb destination. Orthanc with its DICOMweb plug-in (HTTP Basic
authentication on) is registered as a peer of kind `dicomweb`; a route sends what DCMTK storescu
stores into Vesalius there by standard STOW-RS (no signature, no manifest). The instances arrive
byte-identical (Orthanc's `/instances/{id}/file` against Vesalius' WADO-RS), the receipts come
from the STOW-RS answers and show in `vesalius transfers --json`, and `peer ping` is a QIDO-RS
request that fails with a wrong password."""

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from conftest import BIN, Server, dcm_files, dcmtk

ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
TCP = {**os.environ, "TCP_NODELAY": "1"}
USER, PASSWORD = "vesalius", "orthanc-s3cret"

pytestmark = pytest.mark.skipif(not (Path(ORTHANC).exists() and Path(DICOMWEB_PLUGIN).exists()),
                                reason="Orthanc with orthanc-dicomweb is not installed")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def admin(data_dir, *args, env=None):
    r = subprocess.run([BIN, "admin", *args, "--data-dir", str(data_dir)], capture_output=True, text=True,
                       timeout=60, env={**os.environ, **(env or {})})
    return r


@pytest.fixture
def orthanc(tmp_path):
    d = tmp_path / "orthanc"
    d.mkdir()
    http, dicom = free_port(), free_port()
    cfg = {
        "Name": "INTEROP", "StorageDirectory": str(d / "storage"), "IndexDirectory": str(d / "index"),
        "Plugins": [DICOMWEB_PLUGIN], "HttpPort": http, "DicomPort": dicom, "RemoteAccessAllowed": True,
        "AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD},
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (d / "orthanc.json").write_text(json.dumps(cfg))
    log = open(tmp_path / "orthanc.log", "w")
    proc = subprocess.Popen([ORTHANC, str(d / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT, env=TCP)
    base = f"http://127.0.0.1:{http}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if requests.get(f"{base}/system", auth=(USER, PASSWORD), timeout=2).ok:
                break
        except requests.RequestException:
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError((tmp_path / "orthanc.log").read_text()[-3000:])
    yield base
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def test_route_to_orthanc_by_stow_rs(tmp_path, synth_dir, orthanc):
    by_dir = {}
    for p in dcm_files(synth_dir):
        by_dir.setdefault(p.parent, []).append(p)
    ct = max(by_dir.values(), key=len)[:8]
    server = Server(tmp_path / "data", extra_env={"VESALIUS__EXCHANGE__ROUTE_REFRESH_MS": "200",
                                                  "VESALIUS__EXCHANGE__POLL_MS": "200"})
    try:
        d = server.data_dir
        secret = {"ORTHANC_PASSWORD": PASSWORD, "WRONG_PASSWORD": "nope"}
        # The fields must fit the kind: no public key, credentials from the environment.
        r = admin(d, "peer", "add", "orthanc", "--kind", "dicomweb", "--url", f"{orthanc}/dicom-web",
                  "--auth", "basic", "--username", USER, "--org", "default")
        assert r.returncode != 0 and "--password-env" in r.stderr, r.stderr
        r = admin(d, "peer", "add", "orthanc", "--kind", "dicomweb", "--url", f"{orthanc}/dicom-web",
                  "--public-key", "ed25519:AAAA", "--org", "default")
        assert r.returncode != 0 and "no public key" in r.stderr, r.stderr
        r = admin(d, "peer", "add", "orthanc", "--kind", "dicomweb", "--url", f"{orthanc}/dicom-web",
                  "--auth", "basic", "--username", USER, "--password-env", "ORTHANC_PASSWORD", "--org",
                  "default", env=secret)
        assert r.returncode == 0, r.stderr
        r = admin(d, "peer", "add", "orthanc-wrong", "--kind", "dicomweb", "--url", f"{orthanc}/dicom-web",
                  "--auth", "basic", "--username", USER, "--password-env", "WRONG_PASSWORD", "--org",
                  "default", env=secret)
        assert r.returncode == 0, r.stderr
        listed = json.loads(admin(d, "peer", "list", "--json").stdout)
        assert PASSWORD not in json.dumps(listed)
        mine = next(p for p in listed if p["name"] == "orthanc")
        assert mine["kind"] == "dicomweb" and mine["auth"] == {"type": "basic", "username": USER,
                                                                "password": "<redacted>"}
        # Ping: a QIDO-RS request with the credentials.
        ping = json.loads(admin(d, "peer", "ping", "orthanc", "--json").stdout)
        assert ping["ok"], ping
        bad = admin(d, "peer", "ping", "orthanc-wrong", "--json")
        assert bad.returncode != 0 and "401" in json.loads(bad.stdout)["error"], bad.stdout

        r = admin(d, "route", "add", "ct-to-orthanc", "--org", "default", "--to", "peer:orthanc",
                  "--modality", "CT", "--priority", "100")
        assert r.returncode == 0, r.stderr
        time.sleep(1.0)  # the server reloads routes every 200 ms here
        r = subprocess.run([dcmtk("storescu"), "-aet", "STORESCU", "-aec", "VESALIUS", "127.0.0.1",
                            str(server.dicom_port), *map(str, ct)], env=TCP, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr

        auth = (USER, PASSWORD)
        deadline = time.time() + 60
        ids = []
        while time.time() < deadline:
            ids = requests.get(f"{orthanc}/instances", auth=auth, timeout=10).json()
            if len(ids) >= len(ct):
                break
            time.sleep(0.2)
        assert len(ids) == len(ct), server.log_path.read_text()[-3000:]

        # Byte-identical: what Orthanc stored is what Vesalius stored (and sent).
        for i in ids:
            tags = requests.get(f"{orthanc}/instances/{i}/simplified-tags", auth=auth, timeout=10).json()
            study, series, sop = (tags["StudyInstanceUID"], tags["SeriesInstanceUID"], tags["SOPInstanceUID"])
            theirs = requests.get(f"{orthanc}/instances/{i}/file", auth=auth, timeout=30).content
            ours = requests.get(f"{server.dicomweb}/studies/{study}/series/{series}/instances/{sop}",
                                headers={"Accept": "application/dicom"}, timeout=30)
            assert ours.status_code == 200
            assert theirs == ours.content, sop

        # Receipts: one per instance from the STOW-RS answers (not hash-verified), then the study's.
        admin(d, "user", "create", "--org", "default", "--role", "admin", "--username", "ops", "--service")
        token = json.loads(admin(d, "token", "create", "--org", "default", "--role", "admin", "--user", "ops",
                                 "--name", "interop", "--json").stdout)["token"]
        deadline = time.time() + 30
        while True:
            r = subprocess.run([BIN, "transfers", "--server", server.base, "--token", token, "--json"],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
            rows = [t for t in json.loads(r.stdout) if t["queue"] == "peer:orthanc"]
            if rows and rows[0]["complete_ms"] > 0 or time.time() > deadline:
                break
            time.sleep(0.3)
        assert len(rows) == 1, rows
        t = rows[0]
        assert t["delivered"] == len(ct) and t["verified"] == 0 and t["pending"] == 0, t
        assert t["complete_ms"] > 0, t
    finally:
        server.kill()
