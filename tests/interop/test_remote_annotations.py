"""Issue 6, key images and measurement reports on a study held at a peer, black box: a hub and
two spokes (real `vesalius serve` processes linked with `vesalius admin peer add`). Spoke A lets
the hub read (`--may-query`), spoke C only deliver. A hub clinician marks a key image and saves
a measurement on spoke A's study through the hub's API (`?peer=spoke-a`); the documents are
stored at spoke A (found there by a third-party DICOMweb client, read by pydicom), the hub's
remote view of the study shows them at once (the proxy's cache is dropped after the write), and
both sites audit the write. A hub user whose role may not annotate is refused with 403; a peer
that does not let the hub read hides the study (404). Unmarking a key image there: another hub
user is refused, the user's KO is withdrawn at the spoke by an IOCM rejection note (read by
pydicom) and hidden there, a new KO keeps the document's other image; the last one by the
note alone."""

import io
import json
import subprocess
import time
import urllib.error
import urllib.request

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient

from conftest import BIN, Server, caller
from test_exchange_faults import TCP, admin, exchange_config, public_key
from test_federation import store, study_uid_of, synth

HUB_ORG = "csc"
PASSWORD = "remote-annotations-pw-2026"
# name → (organisation there, whether it lets the hub read and write for its users)
SPOKES = {"spoke-a": ("dgh-a", True), "spoke-c": ("dgh-c", False)}


def hub_user(hub_dir, username, role):
    p = subprocess.run([BIN, "admin", "user", "create", "--org", HUB_ORG, "--role", role,
                        "--username", username, "--password-stdin", "--data-dir", str(hub_dir)],
                       input=PASSWORD, capture_output=True, text=True, timeout=60,
                       env={**TCP, "VESALIUS__SITE__NAME": "hub"})
    assert p.returncode == 0, p.stderr


@pytest.fixture
def sites(tmp_path):
    servers = {}
    try:
        hub_dir = tmp_path / "hub"
        admin(hub_dir, "hub", "org", "create", HUB_ORG)
        hub_key = public_key(hub_dir, "hub")
        for name, (org, may_query) in SPOKES.items():
            d = tmp_path / name
            admin(d, name, "org", "create", org)
            admin(d, name, "peer", "add", "hub", "--url", "http://127.0.0.1:9", "--public-key", hub_key,
                  "--org", org, *(["--may-query"] if may_query else []))
            servers[name] = Server(d, config_text=exchange_config(name), callers=[caller("STORESCU", org=org)])
            servers[name].dir = d
            admin(hub_dir, "hub", "peer", "add", name, "--url", servers[name].base,
                  "--public-key", public_key(d, name), "--org", HUB_ORG)
        hub_user(hub_dir, "dr-hub", "clinician")
        hub_user(hub_dir, "dr-two", "clinician")
        hub_user(hub_dir, "svc-hub", "service")
        servers["hub"] = Server(hub_dir, config_text=exchange_config("hub"), callers=[],
                                extra_env={"VESALIUS__AUTH__REQUIRED": "true"})
        servers["hub"].dir = hub_dir
        yield servers
    finally:
        for s in servers.values():
            s.kill()


def login(server, username):
    req = urllib.request.Request(server.base + "/api/v1/auth/login", method="POST",
                                 data=json.dumps({"username": username, "password": PASSWORD}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        cookie = next(v for k, v in r.headers.items() if k.lower() == "set-cookie"
                      and v.startswith("vesalius_session="))
    return cookie.split(";")[0]


def call(server, method, path, cookie, body=None, accept="application/json"):
    """(status, parsed JSON or raw bytes) of a request with the session cookie; a POST carries
    `Sec-Fetch-Site: same-origin` as the app's pages do (the CSRF rule, docs/security.md)."""
    headers = {"Accept": accept, "Cookie": cookie, "Sec-Fetch-Site": "same-origin"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(server.base + path, method=method, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw


def audit_events(server, study, action):
    """The audit events of `study` with `action` in `server`'s trail (`vesalius audit search`
    on its data directory); events of reads are written shortly after the answer."""
    for _ in range(50):
        p = subprocess.run([BIN, "audit", "search", "--study", study, "--action", action, "--limit", "100",
                            "--json", "--data-dir", str(server.dir)], capture_output=True, text=True,
                           timeout=60, env=TCP)
        assert p.returncode == 0, p.stderr
        events = [e["event"] for e in json.loads(p.stdout)]
        if events:
            return events
        time.sleep(0.2)
    return []


def test_key_images_and_measurements_on_a_peers_study_are_stored_at_the_peer(sites, tmp_path):
    hub, a, c = sites["hub"], sites["spoke-a"], sites["spoke-c"]
    ct = synth(tmp_path / "ct", "ct-head", 61)
    store(a, ct)
    study = study_uid_of(ct)
    cookie = login(hub, "dr-hub")

    # The viewer's view of the remote study, through the hub's proxy (now cached there).
    base = f"/dicom-web/peers/spoke-a/studies/{study}"
    status, meta = call(hub, "GET", f"{base}/metadata", cookie, accept="application/dicom+json")
    assert status == 200 and len(meta) == len(ct)
    status, series = call(hub, "GET", f"{base}/series", cookie, accept="application/dicom+json")
    assert status == 200 and [s["00080060"]["Value"][0] for s in series] == ["CT"]
    image = meta[1]
    sop = image["00080018"]["Value"][0]

    # Mark a key image on the remote study from the hub.
    status, ko = call(hub, "POST", f"/api/v1/studies/{study}/key-images?peer=spoke-a", cookie,
                      {"instances": [sop], "description": "remote mark"})
    assert status == 201, ko
    assert ko["studyInstanceUID"] == study and ko["referenced"] == 1

    # Stored at the peer: a third-party client finds the KO series in that study there.
    at_a = DICOMwebClient(url=a.dicomweb)
    found = at_a.search_for_series(study, search_filters={"Modality": "KO"})
    assert [s["0020000E"]["Value"][0] for s in found] == [ko["seriesInstanceUID"]]
    doc = at_a.retrieve_instance(study, ko["seriesInstanceUID"], ko["sopInstanceUID"])
    assert doc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.59"
    assert doc.PatientID == image["00100020"]["Value"][0], "patient copied from the peer's metadata"
    refs = [i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in doc.ContentSequence
            if i.ValueType == "IMAGE"]
    assert refs == [sop]
    # Nothing was stored at the hub.
    status, local = call(hub, "GET", f"/dicom-web/studies/{study}/series", cookie, accept="application/dicom+json")
    assert status in (200, 204) and not local

    # The hub's view shows it at once (its cached metadata and series list were dropped).
    status, series = call(hub, "GET", f"{base}/series", cookie, accept="application/dicom+json")
    assert sorted(s["00080060"]["Value"][0] for s in series) == ["CT", "KO"]
    status, meta2 = call(hub, "GET", f"{base}/metadata", cookie, accept="application/dicom+json")
    assert len(meta2) == len(ct) + 1
    assert ko["sopInstanceUID"] in {m["00080018"]["Value"][0] for m in meta2}

    # A measurement on the remote study: a TID 1500 report stored at the peer.
    rows, cols = image["00280010"]["Value"][0], image["00280011"]["Value"][0]
    status, sr = call(hub, "POST", f"/api/v1/studies/{study}/measurements?peer=spoke-a", cookie, {
        "measurements": [{"instance": sop, "kind": "length", "points": [[1, 1], [cols - 2, rows - 2]],
                          "length": 42.5}]})
    assert status == 201, sr
    found = at_a.search_for_series(study, search_filters={"Modality": "SR"})
    assert [s["0020000E"]["Value"][0] for s in found] == [sr["seriesInstanceUID"]]
    report = at_a.retrieve_instance(study, sr["seriesInstanceUID"], sr["sopInstanceUID"])
    assert report.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert any(i.ConceptNameCodeSequence[0].CodeValue == "121008" and "dr-hub" in str(i.PersonName)
               for i in report.ContentSequence if i.ValueType == "PNAME"), "the hub's user observed"
    status, meta3 = call(hub, "GET", f"{base}/metadata", cookie, accept="application/dicom+json")
    assert sr["sopInstanceUID"] in {m["00080018"]["Value"][0] for m in meta3}

    # Both sides audit: the hub the user's write with the peer; the peer the store by the hub
    # for that user.
    hub_ev = audit_events(hub, study, "key-images")
    assert [(e["outcome"], e["details"]["peer"]) for e in hub_ev] == [("success", "spoke-a")], hub_ev
    assert audit_events(hub, study, "measurements")[0]["details"]["peer"] == "spoke-a"
    stored = audit_events(a, study, "store")
    names = {e["actor"]["name"] for e in stored}
    assert any(n.startswith("peer:hub for ") and "csc" in n for n in names), names

    # A hub user whose role may not annotate (a service account) is refused here, audited.
    svc = login(hub, "svc-hub")
    status, err = call(hub, "POST", f"/api/v1/studies/{study}/key-images?peer=spoke-a", svc,
                       {"instances": [sop]})
    assert status == 403 and err["error"] == "forbidden", err
    denied = [e for e in audit_events(hub, study, "key-images") if e["outcome"] == "denied"]
    assert denied and denied[0]["details"]["peer"] == "spoke-a"
    assert len(at_a.search_for_series(study, search_filters={"Modality": "KO"})) == 1

    # A peer that does not let the hub read (no --may-query there) decides by its own policy:
    # it hides the study from the hub like a missing one (no existence oracle), so the write
    # is refused with the peer's 404 and nothing is stored there. (The peer's refusal of the
    # write itself, 403, is tested in crates/dicomweb: a_peer_writing_for_a_user_….)
    ct_c = synth(tmp_path / "ct-c", "ct-head", 62)
    store(c, ct_c)
    study_c = study_uid_of(ct_c)
    sop_c = str(pydicom.dcmread(ct_c[0], stop_before_pixels=True).SOPInstanceUID)
    status, err = call(hub, "POST", f"/api/v1/studies/{study_c}/key-images?peer=spoke-c", cookie,
                       {"instances": [sop_c]})
    assert status == 404 and err["error"] == "not-found" and "peer" in err["message"], err
    assert DICOMwebClient(url=c.dicomweb).search_for_series(study_c, search_filters={"Modality": "KO"}) == []
    failed = audit_events(hub, study_c, "key-images")
    assert [(e["outcome"], e["details"]["peer"]) for e in failed] == [("failure", "spoke-c")], failed
    # An unknown peer is 404, like elsewhere.
    status, err = call(hub, "POST", f"/api/v1/studies/{study}/key-images?peer=nowhere", cookie,
                       {"instances": [sop]})
    assert status == 404, err


def test_key_images_on_a_peers_study_are_unmarked_there(sites, tmp_path):
    hub, a = sites["hub"], sites["spoke-a"]
    ct = synth(tmp_path / "ct", "ct-head", 63)
    store(a, ct)
    study = study_uid_of(ct)
    sops = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in ct[:2]]
    cookie = login(hub, "dr-hub")
    # Two images in one document.
    status, ko = call(hub, "POST", f"/api/v1/studies/{study}/key-images?peer=spoke-a", cookie,
                      {"instances": sops})
    assert status == 201 and ko["referenced"] == 2, ko
    at_a = DICOMwebClient(url=a.dicomweb)
    kos = lambda: sorted(s["0020000E"]["Value"][0]
                         for s in at_a.search_for_series(study, search_filters={"Modality": "KO"}))
    assert kos() == [ko["seriesInstanceUID"]]

    # Another hub user may not unmark it (decided at the hub: not their document), audited.
    other = login(hub, "dr-two")
    status, err = call(hub, "DELETE", f"/api/v1/studies/{study}/key-images/{sops[0]}?peer=spoke-a", other)
    assert status == 403 and err["error"] == "forbidden", err
    assert kos() == [ko["seriesInstanceUID"]]

    # The user unmarks the first image: at the spoke the KO is withdrawn (hidden) by a rejection
    # note, and a new KO keeps the second image.
    status, r = call(hub, "DELETE", f"/api/v1/studies/{study}/key-images/{sops[0]}?peer=spoke-a", cookie)
    assert status == 200, r
    assert r["rejected"] == [ko["sopInstanceUID"]] and len(r["replacements"]) == 1, r
    note, kept = r["rejectionNote"], r["replacements"][0]
    assert kos() == sorted([note["seriesInstanceUID"], kept["seriesInstanceUID"]])
    doc = at_a.retrieve_instance(study, note["seriesInstanceUID"], note["sopInstanceUID"])
    assert doc.ConceptNameCodeSequence[0].CodeValue == "113001"
    assert doc.ConceptNameCodeSequence[0].CodingSchemeDesignator == "DCM"
    evidence = [r.ReferencedSOPInstanceUID for st in doc.CurrentRequestedProcedureEvidenceSequence
                for se in st.ReferencedSeriesSequence for r in se.ReferencedSOPSequence]
    assert evidence == [ko["sopInstanceUID"]]
    new = at_a.retrieve_instance(study, kept["seriesInstanceUID"], kept["sopInstanceUID"])
    assert [i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in new.ContentSequence
            if i.ValueType == "IMAGE"] == [sops[1]]
    login_names = [i.TextValue for i in new.ContentSequence
                   if i.ValueType == "TEXT" and i.ConceptNameCodeSequence[0].CodeValue == "128774"]
    assert len(login_names) == 1 and login_names[0].startswith("hub/"), login_names

    # The last one: the note alone; the images are all still there.
    status, r = call(hub, "DELETE", f"/api/v1/studies/{study}/key-images/{sops[1]}?peer=spoke-a", cookie)
    assert status == 200 and r["replacements"] == [] and r["rejected"] == [kept["sopInstanceUID"]], r
    assert kos() == sorted([note["seriesInstanceUID"], r["rejectionNote"]["seriesInstanceUID"]])
    assert len(at_a.search_for_instances(study, search_filters={"Modality": "CT"})) == len(ct)
    unmarks = [e for e in audit_events(hub, study, "key-images") if "unmark" in e["details"]]
    assert {(e["outcome"], e["details"]["peer"]) for e in unmarks} == {("success", "spoke-a"), ("denied", "spoke-a")}
