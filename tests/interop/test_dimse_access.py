"""DICOM callers (issue 4) against the real binary with DCMTK: an unknown calling AE title and a
known one from the wrong address are rejected at association time (A-ASSOCIATE-RJ, calling AE
title not recognized), a store-only AE title stores but its C-FIND is refused (0x0124), and the
audit trail in index.db (read with sqlite3, read-only) holds one `store` event for a study sent
by storescu, the `query` events and the rejections. `[[dicom.callers]]` are seeded at start and
revoked when removed from the configuration, while AE titles added with `vesalius admin` stay."""

import json
import os
import sqlite3
import subprocess
import time
from collections import defaultdict

import pydicom
import pytest

from conftest import BIN, DEFAULT_CALLERS, Server, caller, dcm_files, dcmtk

ENV = dict(os.environ, TCP_NODELAY="1")


def run(cmd):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, env=ENV)


@pytest.fixture
def site(tmp_path):
    callers = DEFAULT_CALLERS + [
        caller("MODALITY", may_query=False, description="CT scanner, store only"),
        caller("FARAWAY", allowed_addrs=["10.9.9.9"]),
    ]
    s = Server(tmp_path / "data", callers=callers)
    yield s
    s.kill()


def studies(synth_dir):
    """Files of each synthetic study, largest first."""
    by_study = defaultdict(list)
    for f in dcm_files(synth_dir):
        by_study[str(pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID)].append(f)
    return sorted(by_study.items(), key=lambda kv: -len(kv[1]))


def audit_rows(server, wait_for=lambda rows: True, timeout=5):
    """The audit table, oldest first, as (action, outcome, actor_id, study_uid, event), read-only;
    polls until `wait_for(rows)` (query and retrieve events are appended off the response path)."""
    deadline = time.time() + timeout
    while True:
        con = sqlite3.connect(f"file:{server.data_dir / 'index.db'}?mode=ro", uri=True)
        try:
            rows = [(a, o, i, s, json.loads(e)) for a, o, i, s, e in con.execute(
                "SELECT action, outcome, actor_id, study_uid, event FROM audit ORDER BY seq")]
        finally:
            con.close()
        if wait_for(rows) or time.time() > deadline:
            return rows
        time.sleep(0.1)


def echo(server, aet):
    return run([dcmtk("echoscu"), "-aet", aet, "-aec", "VESALIUS", "127.0.0.1", server.dicom_port])


def test_unknown_and_misplaced_callers_are_rejected(site):
    r = echo(site, "UNKNOWN")
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "Association Rejected" in out and "Calling AE Title Not Recognized" in out, out
    # A known title from an address outside its allow-list gets the same answer.
    r = echo(site, "FARAWAY")
    assert r.returncode != 0 and "Calling AE Title Not Recognized" in r.stdout + r.stderr
    assert echo(site, "ECHOSCU").returncode == 0
    rows = audit_rows(site, lambda rows: sum(a == "association-rejected" for a, *_ in rows) >= 2)
    rejected = [e for a, o, _, _, e in rows if a == "association-rejected" and o == "denied"]
    assert [e["actor"]["name"] for e in rejected] == ["UNKNOWN", "FARAWAY"]
    assert all(e["details"]["rj_reason"] == 3 and e["source"] == "127.0.0.1" for e in rejected)


def test_store_only_ae_stores_but_may_not_query(site, synth_dir):
    (study, files), *_ = studies(synth_dir)
    r = run([dcmtk("storescu"), "-aet", "MODALITY", "-aec", "VESALIUS", "127.0.0.1", site.dicom_port,
             *files])
    assert r.returncode == 0, r.stdout + r.stderr
    r = run([dcmtk("findscu"), "-v", "-aet", "MODALITY", "-aec", "VESALIUS", "-S", "-k", "QueryRetrieveLevel=STUDY",
             "-k", "StudyInstanceUID", "127.0.0.1", site.dicom_port])
    out = r.stdout + r.stderr
    # DCMTK 3.6.7 has no name for 0x0124 ("Unknown Status: 0x124").
    assert "0x124" in out or "0x0124" in out, out
    rows = audit_rows(site, lambda rows: any(a == "query" for a, *_ in rows))
    stores = [e for a, _, i, s, e in rows if a == "store" and i == "MODALITY"]
    assert len(stores) == 1 and stores[0]["study_uid"] == study
    denied = [(o, e) for a, o, i, _, e in rows if a == "query" and i == "MODALITY"]
    assert [o for o, _ in denied] == ["denied"]
    assert denied[0][1]["details"]["status"] == 0x0124


def test_a_storescu_study_is_one_store_event_and_queries_are_audited(site, synth_dir):
    (study, files), *_ = studies(synth_dir)
    assert len(files) > 1
    r = run([dcmtk("storescu"), "-aec", "VESALIUS", "127.0.0.1", site.dicom_port, *files])
    assert r.returncode == 0, r.stdout + r.stderr
    r = run([dcmtk("findscu"), "-aec", "VESALIUS", "-S", "-k", "QueryRetrieveLevel=STUDY",
             "-k", f"StudyInstanceUID={study}", "-k", "PatientName", "127.0.0.1", site.dicom_port])
    assert r.returncode == 0, r.stdout + r.stderr
    rows = audit_rows(site, lambda rows: any(a == "query" for a, *_ in rows))
    stores = [(o, e) for a, o, i, s, e in rows if a == "store" and s == study]
    assert len(stores) == 1, f"{len(files)} instances, {len(stores)} store events"
    outcome, ev = stores[0]
    assert outcome == "success"
    assert ev["actor"] == {"kind": "ae", "id": "STORESCU", "name": "STORESCU", "org": "default",
                           "role": "service"}
    assert ev["org"] == "default" and ev["source"].startswith("127.0.0.1:")
    assert "DCMTK" in ev["user_agent"], ev["user_agent"]
    assert ev["patient"] and ev["patient"][1]
    queries = [e for a, o, i, s, e in rows if a == "query" and i == "FINDSCU" and o == "success"]
    assert len(queries) == 1 and queries[0]["study_uid"] == study
    assert queries[0]["details"]["level"] == "STUDY" and queries[0]["details"]["answers"] == 1


def test_config_callers_are_seeded_and_revoked_at_start(tmp_path):
    data = tmp_path / "data"
    srv = Server(data, callers=[caller("ECHOSCU"), caller("LEAVING", description="old CT")])
    try:
        assert echo(srv, "LEAVING").returncode == 0
    finally:
        srv.stop()
    # An AE title added with the command line is the administrator's: restarts leave it alone.
    r = subprocess.run([BIN, "admin", "ae", "add", "ADMINAE", "--org", "default", "--allow", "127.0.0.1",
                        "--data-dir", str(data)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    srv = Server(data, callers=[caller("ECHOSCU")])
    try:
        r = echo(srv, "LEAVING")
        assert r.returncode != 0 and "Calling AE Title Not Recognized" in r.stdout + r.stderr
        assert echo(srv, "ADMINAE").returncode == 0
        assert echo(srv, "ECHOSCU").returncode == 0
    finally:
        srv.stop()
    listed = json.loads(subprocess.run([BIN, "admin", "ae", "list", "--json", "--data-dir", str(data)],
                                       capture_output=True, text=True, timeout=60, check=True).stdout)
    assert {a["ae_title"]: a["description"] for a in listed} == {"ADMINAE": "", "ECHOSCU": "[config]"}
    changes = [(e["details"]["change"], e["details"]["ae_title"], e["actor"]["id"])
               for a, _, _, _, e in audit_rows(srv) if a == "admin-change"]
    assert ("ae-add", "LEAVING", "config") in changes
    assert ("ae-remove", "LEAVING", "config") in changes
    assert changes.count(("ae-add", "ECHOSCU", "config")) == 1, "unchanged entries are not rewritten"
