"""The binary's commands against real peers: import (folders, zip, zip bomb, DICOMDIR), send to
DCMTK storescp and via STOW, echo, query, delete, admin check, config dump, the disk watermark,
Storage Commitment with pynetdicom as the SCU, and graceful shutdown."""

import json
import os
import socket
import subprocess
import time
import zipfile
from pathlib import Path

import pydicom
import pydicom.data
import pytest
import requests
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel, Verification

from conftest import BIN, Server, dcm_files, dcmtk


def run(*args, check=True, **kw):
    env = dict(os.environ, VESALIUS__LIMITS__MIN_FREE_BYTES="0")
    r = subprocess.run([BIN, *args], capture_output=True, text=True, env=env, timeout=300, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{args} failed: {r.stdout}\n{r.stderr}")
    return r


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def test_import_folder_zip_and_bombs(server, synth_dir, tmp_path):
    files = dcm_files(synth_dir)
    r = run("import", str(synth_dir), "--server", server.base, "--json")
    summary = json.loads(r.stdout)
    assert summary["counts"].get("stored", 0) == len(files)
    # Again: every object is a duplicate, nothing is stored twice.
    summary = json.loads(run("import", str(synth_dir), "--server", server.base, "--json").stdout)
    assert summary["counts"] == {"duplicate": len(files)}
    stats = requests.get(f"{server.base}/api/v1/stats").json()
    assert stats["instances"] == len(files)

    # A zip with a good entry, a non-DICOM entry and a bomb entry.
    z = tmp_path / "in.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(files[0], "a/one.dcm")
        zf.writestr("notes.txt", "not dicom at all")
        zf.writestr("bomb.bin", b"\0" * (50 << 20))
    summary = json.loads(run("import", str(z), "--server", server.base, "--json", check=False).stdout)
    assert summary["counts"]["duplicate"] == 1
    reasons = {r["source"].split("!")[1]: r["reason"] for r in summary["rejected"]}
    assert "invalid-dicom" in reasons["notes.txt"] or "data-set-mismatch" in reasons["notes.txt"]
    assert "beyond the limits" in reasons["bomb.bin"] or "zip bomb" in reasons["bomb.bin"]


def test_send_echo_query_delete(server, synth_dir, tmp_path):
    run("import", str(synth_dir), "--server", server.base)
    # echo our own SCP and a DCMTK storescp
    assert "OK" in run("echo", f"VESALIUS@127.0.0.1:{server.dicom_port}").stdout
    port = free_port()
    out = tmp_path / "received"
    out.mkdir()
    scp = subprocess.Popen([dcmtk("storescp"), "-od", str(out), "+xa", str(port)],
                           env=dict(os.environ, TCP_NODELAY="1"))
    try:
        time.sleep(0.5)
        assert "OK" in run("echo", f"STORESCP@127.0.0.1:{port}").stdout
        q = json.loads(run("query", "--server", server.base, "--json", "StudyDescription=CT HEAD*").stdout)
        assert len(q) >= 1
        study = q[0]["0020000D"]["Value"][0]
        n = q[0]["00201208"]["Value"][0]
        r = run("send", "--study", study, "--server", server.base, "--to-dicom", f"STORESCP@127.0.0.1:{port}")
        assert f"sent {n}, failed 0" in r.stdout
    finally:
        scp.terminate()
        scp.wait()
    assert len(list(out.iterdir())) == n
    # STOW to a second Vesalius
    other = Server(tmp_path / "other")
    try:
        r = run("send", "--study", study, "--server", server.base, "--to-web", other.dicomweb)
        assert f"sent {n}, failed 0" in r.stdout
        assert requests.get(f"{other.base}/api/v1/stats").json()["instances"] == n
    finally:
        other.kill()
    # Delete through the server
    assert f"deleted {n}" in run("delete", "--study", study, "--server", server.base).stdout
    r = requests.get(f"{server.dicomweb}/studies", params={"StudyInstanceUID": study})
    assert r.status_code in (200, 204) and (r.status_code == 204 or r.json() == [])


def test_admin_check_finds_damage_and_orphans(tmp_path, synth_dir):
    data = tmp_path / "data"
    srv = Server(data)
    run("import", str(synth_dir), "--server", srv.base)
    srv.stop()
    blobs = [p for p in (data / "blobs").rglob("*") if p.is_file() and ".spool" not in str(p)]
    assert json.loads(run("admin", "check", "--data-dir", str(data), "--json").stdout)["ok"] == len(blobs)
    # Damage one blob, orphan another.
    with open(blobs[0], "r+b") as f:
        f.seek(200)
        f.write(b"X")
    orphan = data / "blobs" / "default" / "1.2.3" / "1.2.3.4" / "1.2.3.4.5" / "deadbeef"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"junk")
    r = run("admin", "check", "--data-dir", str(data), "--json", check=False)
    report = json.loads(r.stdout)
    assert r.returncode != 0
    assert len(report["damaged"]) == 1
    assert report["orphans"] == ["default/1.2.3/1.2.3.4/1.2.3.4.5/deadbeef"]


def test_config_dump_and_env_overrides(tmp_path):
    cfg = tmp_path / "v.toml"
    cfg.write_text('[dicom]\nae_title = "HUB"\n')
    env = dict(os.environ, VESALIUS__HTTP__ADDR="127.0.0.1:9191")
    r = subprocess.run([BIN, "--config", str(cfg), "config", "dump"], capture_output=True, text=True, env=env)
    assert r.returncode == 0
    assert 'ae_title = "HUB"' in r.stdout and "127.0.0.1:9191" in r.stdout
    cfg.write_text('[dicom]\nno_such_key = 1\n')
    r = subprocess.run([BIN, "--config", str(cfg), "config", "dump"], capture_output=True, text=True)
    assert r.returncode != 0 and "no_such_key" in r.stderr


def test_disk_watermark_refuses_cleanly(tmp_path, synth_dir):
    srv = Server(tmp_path / "data", extra_env={"VESALIUS__LIMITS__MIN_FREE_BYTES": str(1 << 62)})
    try:
        f = dcm_files(synth_dir)[0]
        ds = pydicom.dcmread(f)
        ae = AE(ae_title="FULLDISK")
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title="VESALIUS")
        st = assoc.send_c_store(ds)
        assert st.Status == 0xA700
        assoc.release()
        body = f.read_bytes()
        boundary = "b0und"
        payload = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + body
                   + f"\r\n--{boundary}--\r\n".encode())
        r = requests.post(f"{srv.dicomweb}/studies", data=payload, headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})
        assert r.status_code in (409, 507)
        r = requests.post(f"{srv.base}/api/v1/instances", data=body, headers={"Content-Type": "application/dicom"})
        assert r.status_code == 507 and r.json()["error"] == "insufficient-storage"
        assert requests.get(f"{srv.base}/readyz").status_code == 507
        assert requests.get(f"{srv.base}/healthz").status_code == 200
    finally:
        srv.kill()


def test_storage_commitment_with_pynetdicom(server, synth_dir):
    run("import", str(synth_dir), "--server", server.base)
    f = dcm_files(synth_dir)[0]
    ds = pydicom.dcmread(f)
    reports = []

    def on_report(event):
        reports.append(event.event_information if hasattr(event, "event_information") else event)
        req = event.request
        reports.append(req)
        return 0x0000, None

    ae = AE(ae_title="COMMITSCU")
    ae.add_requested_context(StorageCommitmentPushModel)
    ae.add_requested_context(Verification)
    from pynetdicom import build_role
    role = build_role(StorageCommitmentPushModel, scp_role=True, scu_role=True)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title="VESALIUS", ext_neg=[role],
                         evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    assert assoc.is_established
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid
    req = Dataset()
    req.TransactionUID = generate_uid()
    ok = Dataset()
    ok.ReferencedSOPClassUID = ds.SOPClassUID
    ok.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    missing = Dataset()
    missing.ReferencedSOPClassUID = ds.SOPClassUID
    missing.ReferencedSOPInstanceUID = "1.2.3.999"
    req.ReferencedSOPSequence = [ok, missing]
    status, _ = assoc.send_n_action(req, 1, StorageCommitmentPushModel, "1.2.840.10008.1.20.1.1")
    assert status.Status == 0x0000
    deadline = time.time() + 10
    while not reports and time.time() < deadline:
        time.sleep(0.05)
    assoc.release()
    assert reports, "no N-EVENT-REPORT received"
    req_ev = [r for r in reports if hasattr(r, "EventTypeID")][0]
    assert req_ev.EventTypeID == 2  # some failed
    info = req_ev.EventInformation
    info = pydicom.dcmread(info, force=True) if not isinstance(info, Dataset) else info
    assert [x.ReferencedSOPInstanceUID for x in info.ReferencedSOPSequence] == [ds.SOPInstanceUID]
    assert [x.ReferencedSOPInstanceUID for x in info.FailedSOPSequence] == ["1.2.3.999"]


def test_graceful_shutdown_finishes_and_exits(tmp_path):
    srv = Server(tmp_path / "data")
    assert requests.get(f"{srv.base}/healthz").status_code == 200
    assert srv.stop(timeout=20) == 0


def test_import_dicomdir_media(server, tmp_path):
    import shutil as sh
    src = Path(pydicom.data.__file__).parent / "test_files" / "dicomdirtests"
    media = tmp_path / "media"
    sh.copytree(src, media)
    dicomdir = pydicom.dcmread(media / "DICOMDIR")
    referenced = [r.ReferencedFileID for r in dicomdir.DirectoryRecordSequence if "ReferencedFileID" in r]
    assert referenced
    summary = json.loads(run("import", str(media / "DICOMDIR"), "--server", server.base, "--json", check=False).stdout)
    imported = summary["counts"].get("stored", 0) + summary["counts"].get("duplicate", 0)
    assert imported == len(referenced), summary
    assert requests.get(f"{server.base}/api/v1/stats").json()["instances"] == len(
        {pydicom.dcmread(media.joinpath(*([r] if isinstance(r, str) else list(r))), stop_before_pixels=True).SOPInstanceUID
         for r in referenced})


def test_metrics_and_health(server, synth_dir):
    run("import", str(synth_dir), "--server", server.base)
    f = dcm_files(synth_dir)[0]
    ds = pydicom.dcmread(f)
    ae = AE(ae_title="METRICS")
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title="VESALIUS")
    assert assoc.send_c_store(ds).Status == 0x0000
    assoc.release()
    requests.get(f"{server.dicomweb}/studies", params={"PatientName": "*"})
    text = requests.get(f"{server.base}/metrics").text
    for name in ("vesalius_instances_received_total", "vesalius_ingest_latency_seconds",
                 "vesalius_dimse_active_associations", "vesalius_qido_seconds"):
        assert name in text, name
    assert requests.get(f"{server.base}/readyz").json()["status"] == "ready"
