"""Issue 5, federated search and remote viewing, black box: three real `vesalius serve`
processes (a hub and two spokes) on loopback, linked with `vesalius admin peer add`; the spokes
let the hub search them (`--may-query`). A hub user searches the network with the JSON API and
with a third-party DICOMweb client (dicomweb-client, QIDO-RS `scope=network`), views a spoke's
study through the hub (the same client, rooted at `/dicom-web/peers/{peer}`), and keeps searching
while one spoke is down."""

import json
import subprocess
import urllib.error
import urllib.request

import pytest
from dicomweb_client.api import DICOMwebClient

from conftest import BIN, Server, caller, dcmtk
from test_exchange_faults import TCP, admin, exchange_config, public_key

HUB_ORG = "csc"
SPOKES = {"spoke-a": "dgh-a", "spoke-b": "dgh-b"}
PASSWORD = "federation-test-pw-2026"


def synth(out, kind, seed):
    subprocess.run([BIN, "synth", "--out", str(out), "--seed", str(seed), "--kinds", kind, "--slices", "3"],
                   check=True, capture_output=True, timeout=120)
    files = sorted(str(p) for p in out.rglob("*.dcm"))
    assert files
    return files


def study_uid_of(files):
    import pydicom
    return str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)


def login(server):
    req = urllib.request.Request(server.base + "/api/v1/auth/login", method="POST",
                                 data=json.dumps({"username": "dr-hub", "password": PASSWORD}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        cookie = next(v for k, v in r.headers.items() if k.lower() == "set-cookie"
                      and v.startswith("vesalius_session="))
    return cookie.split(";")[0]


def get(server, path, cookie, accept="application/json"):
    req = urllib.request.Request(server.base + path, headers={"Accept": accept, "Cookie": cookie})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, r.headers, r.read()


@pytest.fixture
def network(tmp_path):
    servers = {}
    try:
        # The spokes first: the hub's peer records need their URLs. They never call the hub
        # here, so their record of it only needs a valid loopback URL.
        hub_dir = tmp_path / "hub"
        admin(hub_dir, "hub", "org", "create", HUB_ORG)
        hub_key = public_key(hub_dir, "hub")
        for name, org in SPOKES.items():
            d = tmp_path / name
            admin(d, name, "org", "create", org)
            admin(d, name, "peer", "add", "hub", "--url", "http://127.0.0.1:9", "--public-key", hub_key,
                  "--org", org, "--may-query")
            servers[name] = Server(d, config_text=exchange_config(name),
                                   callers=[caller("STORESCU", org=org)])
            admin(hub_dir, "hub", "peer", "add", name, "--url", servers[name].base,
                  "--public-key", public_key(d, name), "--org", HUB_ORG)
        p = subprocess.run([BIN, "admin", "user", "create", "--org", HUB_ORG, "--role", "clinician",
                            "--username", "dr-hub", "--password-stdin", "--data-dir", str(hub_dir)],
                           input=PASSWORD, capture_output=True, text=True, timeout=60,
                           env={**TCP, "VESALIUS__SITE__NAME": "hub"})
        assert p.returncode == 0, p.stderr
        servers["hub"] = Server(hub_dir, config_text=exchange_config("hub").replace(
            "[exchange]", "[exchange]\nfederation_timeout_ms = 2000"),
            callers=[], extra_env={"VESALIUS__AUTH__REQUIRED": "true"})
        yield servers
    finally:
        for s in servers.values():
            s.kill()


def store(server, files):
    r = subprocess.run([dcmtk("storescu"), "-aet", "STORESCU", "-aec", "VESALIUS", "127.0.0.1",
                        str(server.dicom_port), *files], env=TCP, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_federated_search_remote_viewing_and_a_spoke_down(network, tmp_path):
    hub, a, b = network["hub"], network["spoke-a"], network["spoke-b"]
    ct = synth(tmp_path / "ct", "ct-head", 31)
    mr = synth(tmp_path / "mr", "mr-brain", 32)
    store(a, ct)
    store(b, mr)
    ct_uid, mr_uid = study_uid_of(ct), study_uid_of(mr)
    cookie = login(hub)

    # Without a session, nothing (auth is required at the hub).
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(hub.base + "/api/v1/search", timeout=30)
    assert e.value.code == 401

    status, _, body = get(hub, "/api/v1/search", cookie)
    found = json.loads(body)
    assert status == 200 and found["complete"] is True, found
    by_uid = {s["study_instance_uid"]: s for s in found["studies"]}
    assert by_uid[ct_uid]["sites"] == ["spoke-a"] and by_uid[ct_uid]["instances"] == len(ct)
    assert by_uid[mr_uid]["sites"] == ["spoke-b"] and by_uid[mr_uid]["modalities"] == ["MR"]
    assert {s["site"]: s["status"] for s in found["sites"]} == {"hub": "ok", "spoke-a": "ok", "spoke-b": "ok"}

    # A third-party DICOMweb client: QIDO-RS scope=network at the hub.
    client = DICOMwebClient(url=hub.dicomweb, headers={"Cookie": cookie})
    studies = client.search_for_studies(search_filters={"scope": "network", "ModalitiesInStudy": "MR"})
    assert [s["0020000D"]["Value"][0] for s in studies] == [mr_uid]
    assert studies[0]["00091001"]["Value"] == ["spoke-b"]
    # (dicomweb-client sends `Host` without the port, so compare the path; the full URL from a
    # request with a complete Host header is checked below.)
    retrieve_url = studies[0]["00081190"]["Value"][0]
    assert retrieve_url.endswith(f"/dicom-web/peers/spoke-b/studies/{mr_uid}"), retrieve_url
    _, _, body = get(hub, f"/dicom-web/studies?scope=network&StudyInstanceUID={mr_uid}", cookie,
                     accept="application/dicom+json")
    assert json.loads(body)[0]["00081190"]["Value"] == [f"{hub.dicomweb}/peers/spoke-b/studies/{mr_uid}"]
    assert client.search_for_studies(search_filters={"StudyInstanceUID": mr_uid}) == [], "local scope by default"

    # Remote viewing: the same client rooted at the hub's proxy for spoke B.
    remote = DICOMwebClient(url=f"{hub.dicomweb}/peers/spoke-b", headers={"Cookie": cookie})
    meta = remote.retrieve_study_metadata(mr_uid)
    assert len(meta) == len(mr)
    assert b.base not in json.dumps(meta), "the spoke's own URLs are rewritten to the hub's proxy"
    series, sop = meta[0]["0020000E"]["Value"][0], meta[0]["00080018"]["Value"][0]
    inst = remote.retrieve_instance(mr_uid, series, sop)
    direct = DICOMwebClient(url=b.dicomweb).retrieve_instance(mr_uid, series, sop)
    assert inst.SOPInstanceUID == sop and inst.PixelData == direct.PixelData
    rendered = remote.retrieve_instance_rendered(mr_uid, series, sop, media_types=("image/jpeg",))
    assert rendered[:2] == b"\xff\xd8"

    # Spoke B down: the search still answers, says which site is missing, keeps A's study.
    b.kill()
    status, headers, body = get(hub, "/api/v1/search", cookie)
    found = json.loads(body)
    assert status == 200 and found["complete"] is False
    assert {s["site"]: s["status"] for s in found["sites"]}["spoke-b"] in ("unreachable", "timeout")
    assert [s["study_instance_uid"] for s in found["studies"]] == [ct_uid]
    status, headers, body = get(hub, "/dicom-web/studies?scope=network", cookie, accept="application/dicom+json")
    warnings = headers.get_all("Warning") or []
    assert status == 200 and any("299" in w and "spoke-b" in w for w in warnings), warnings
    # A cached view of B still opens; an uncached one is a clear 502.
    assert remote.retrieve_study_metadata(mr_uid) == meta
    with pytest.raises(Exception) as e:
        remote.retrieve_instance_frames(mr_uid, series, sop, frame_numbers=[1])
    assert "502" in str(e.value)
