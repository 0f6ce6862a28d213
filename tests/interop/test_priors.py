"""Issue 5, black box: priors from a legacy PACS. Orthanc (Debian package) plays the PACS: a DICOM
Q/R SCP that knows Vesalius as a modality (`DicomModalities`, our AE title, host and DICOM port)
and is preloaded by DCMTK `storescu` with two prior studies of a synthetic patient.

- `vesalius admin node find` and `GET /api/v1/nodes/{name}/studies` list them (C-FIND);
- `vesalius admin node retrieve --wait` brings one in (a durable C-MOVE job to our own AE title),
  every instance byte-identical to what was loaded into the PACS;
- a `prefetch:pacs` route fires when a new study of that patient arrives at Vesalius, and the
  other prior arrives by itself; the prefetch happens once per study;
- a node that cannot reach us parks the retrieval with the node's status and counters.
"""

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from conftest import BIN, DEFAULT_CALLERS, Server, caller, dcm_files, dcmtk

TCP = {**os.environ, "TCP_NODELAY": "1"}
ORTHANC = "/usr/sbin/Orthanc"
PATIENT = "VS39092631"  # the patient of `vesalius synth --seed 7`
ISSUER = "VESALIUS-SYNTH"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def data_set(b):
    """The data set bytes of a Part 10 file (after preamble, DICM and the meta group)."""
    assert b[128:132] == b"DICM"
    return b[144 + int.from_bytes(b[140:144], "little"):]


def admin(data_dir, *args, timeout=120):
    return subprocess.run([BIN, "admin", *args, "--data-dir", str(data_dir)], capture_output=True, text=True,
                          timeout=timeout)


class Orthanc:
    """Orthanc with a DICOM Q/R SCP on a free port, knowing `modalities`."""

    def __init__(self, workdir: Path, modalities):
        workdir.mkdir(parents=True, exist_ok=True)
        self.http_port, self.dicom_port = free_port(), free_port()
        cfg = {
            "Name": "PRIORS",
            "StorageDirectory": str(workdir / "storage"),
            "IndexDirectory": str(workdir / "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomModalities": modalities,
            "Plugins": [],
        }
        path = workdir / "orthanc.json"
        path.write_text(json.dumps(cfg))
        self.log_path = workdir / "orthanc.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([ORTHANC, str(path)], stdout=self.log, stderr=subprocess.STDOUT, env=TCP,
                                     stdin=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{self.http_port}/system", timeout=1).ok:
                    socket.create_connection(("127.0.0.1", self.dicom_port), timeout=1).close()
                    return
            except (requests.RequestException, OSError):
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Orthanc did not start: {self.log_path.read_text()[-2000:]}")

    def store(self, files):
        """DCMTK storescu, proposing RLE Lossless for the files stored in it (the synthetic prior
        CT is), the uncompressed syntaxes for the others."""
        import pydicom
        rle = [f for f in files if pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID
               == "1.2.840.10008.1.2.5"]
        plain = [f for f in files if f not in rle]
        for group, flags in ((rle, ["-xr"]), (plain, [])):
            if not group:
                continue
            r = subprocess.run([dcmtk("storescu"), *flags, "-aec", "ORTHANC", "127.0.0.1", str(self.dicom_port),
                                *map(str, group)], env=TCP, capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stderr

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def patient(tmp_path_factory):
    """The synthetic patient's studies by kind: ct-head-prior, mr-brain (the priors at the PACS) and
    ct-head (the new study)."""
    if not Path(ORTHANC).exists():
        pytest.skip("Orthanc not installed")
    out = tmp_path_factory.mktemp("synth")
    subprocess.run([BIN, "synth", "--out", str(out), "--seed", "7", "--slices", "4"],
                   check=True, capture_output=True, timeout=120)
    by_kind = {}
    for p in dcm_files(out):
        if PATIENT not in str(p):
            continue
        kind = p.parent.parent.name.split("_", 1)[1]
        by_kind.setdefault(kind, []).append(p)
    assert {"ct-head-prior", "mr-brain", "ct-head"} <= set(by_kind), by_kind.keys()
    return by_kind


def study_uid(files):
    import pydicom
    return pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID


def held(data_dir, study):
    """Data sets of the blobs Vesalius holds for `study` (organisation `default`)."""
    return sorted(data_set(p.read_bytes()) for p in (data_dir / "blobs" / "default" / study).rglob("*")
                  if p.is_file())


def wait_for(pred, secs=60, what="condition"):
    deadline = time.time() + secs
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def site(tmp_path):
    """Vesalius (admitting ORTHANC as a caller of `default`) and Orthanc knowing Vesalius."""
    server = Server(tmp_path / "data", callers=DEFAULT_CALLERS + [caller("ORTHANC")],
                    extra_env={"VESALIUS__EXCHANGE__ROUTE_REFRESH_MS": "200",
                               "VESALIUS__EXCHANGE__POLL_MS": "200",
                               "VESALIUS__EXCHANGE__PREFETCH_DELAY_MS": "500",
                               "VESALIUS__EXCHANGE__BACKOFF_BASE_MS": "200",
                               "VESALIUS__EXCHANGE__BACKOFF_MAX_MS": "1000"})
    orthanc = None
    try:
        orthanc = Orthanc(tmp_path / "orthanc", {"vesalius": ["VESALIUS", "127.0.0.1", server.dicom_port]})
        r = admin(server.data_dir, "node", "add", "pacs", "--ae-title", "ORTHANC", "--host", "127.0.0.1",
                  "--port", str(orthanc.dicom_port), "--org", "default", "--description", "Orthanc")
        assert r.returncode == 0, r.stderr
        yield server, orthanc
    finally:
        server.kill()
        if orthanc:
            orthanc.stop()


def test_find_retrieve_and_prefetch_priors_from_orthanc(site, patient):
    server, orthanc = site
    ct_prior, mr = patient["ct-head-prior"], patient["mr-brain"]
    orthanc.store(ct_prior + mr)
    prior_uid, mr_uid = study_uid(ct_prior), study_uid(mr)

    # C-FIND from the command line: both priors, none held here yet.
    r = admin(server.data_dir, "node", "find", "pacs", "--patient-id", PATIENT, "--issuer", ISSUER, "--json")
    assert r.returncode == 0, r.stderr
    found = {s["study_uid"]: s for s in json.loads(r.stdout)}
    assert set(found) == {prior_uid, mr_uid}, found
    assert found[mr_uid]["instances"] == len(mr)
    assert found[mr_uid]["modalities"] == ["MR"]
    assert all(s["held_instances"] == 0 for s in found.values())
    # A date range that excludes both, and another patient: nothing.
    r = admin(server.data_dir, "node", "find", "pacs", "--patient-id", PATIENT, "--study-date", "20250101-",
              "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == [], r.stdout + r.stderr
    r = admin(server.data_dir, "node", "find", "pacs", "--patient-id", "NOBODY", "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == []

    # The same through the API, as an administrator of the node's organisation.
    tok = json.loads(admin(server.data_dir, "token", "create", "--org", "default", "--role", "admin",
                           "--name", "priors", "--json").stdout)["token"]
    auth = {"Authorization": f"Bearer {tok}"}
    rsp = requests.get(f"{server.base}/api/v1/nodes/pacs/studies", params={"PatientID": PATIENT, "IssuerOfPatientID": ISSUER},
                       headers=auth, timeout=60)
    assert rsp.status_code == 200, rsp.text
    assert {s["study_uid"] for s in rsp.json()} == {prior_uid, mr_uid}
    rsp = requests.get(f"{server.base}/api/v1/nodes/pacs/studies", headers=auth, timeout=60)
    assert rsp.status_code == 400 and rsp.json()["error"] == "bad-request"

    # C-MOVE of the MR, as a durable job the server runs; its instances arrive through our own
    # C-STORE SCP, byte for byte what was loaded into Orthanc.
    r = admin(server.data_dir, "node", "retrieve", "pacs", "--study", mr_uid, "--wait", "--wait-secs", "120")
    assert r.returncode == 0, r.stdout + r.stderr + server.log_path.read_text()[-3000:]
    assert "retrieved" in r.stdout and f"{len(mr)} held here" in r.stdout, r.stdout
    assert held(server.data_dir, mr_uid) == sorted(data_set(p.read_bytes()) for p in mr)
    rsp = requests.get(f"{server.base}/api/v1/transfers", headers=auth, timeout=30)
    t = [x for x in rsp.json() if x["queue"] == "retrieve:pacs" and x["study_uid"] == mr_uid]
    assert t and t[0]["delivered"] == len(mr) and t[0]["complete_ms"] > 0, rsp.json()

    # A prefetch route: a new CT head of the patient arrives; the prior CT (not held) follows by
    # itself, the MR (held) is not moved again.
    r = admin(server.data_dir, "route", "add", "priors", "--org", "default", "--to", "prefetch:pacs?max=2",
              "--modality", "CT")
    assert r.returncode == 0, r.stderr
    time.sleep(1.0)  # routes reload every 200 ms here
    r = subprocess.run([dcmtk("storescu"), "-aet", "STORESCU", "-aec", "VESALIUS", "127.0.0.1",
                        str(server.dicom_port), *map(str, patient["ct-head"])], env=TCP, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    new_uid = study_uid(patient["ct-head"])
    want = sorted(data_set(p.read_bytes()) for p in ct_prior)
    wait_for(lambda: held(server.data_dir, prior_uid) == want, 90,
             f"the prior CT {prior_uid}: {server.log_path.read_text()[-3000:]}")
    receipts = requests.get(f"{server.base}/api/v1/transfers/receipts",
                            params={"queue": "prefetch:pacs"}, headers=auth, timeout=30).json()
    mine = [x for x in receipts if x["study_uid"] == new_uid and x["kind"] == "study"]
    assert len(mine) == 1, receipts
    assert "1 already here, 1 to retrieve" in mine[0]["detail"], mine
    # The prior CT itself arrived from the node (a CT too): it starts no prefetch chain.
    skipped = [x for x in receipts if x["study_uid"] == prior_uid]
    assert all("skipped" in x["detail"] for x in skipped), skipped
    # More instances of the new study later: the prefetch does not run again.
    r = subprocess.run([dcmtk("storescu"), "-aet", "STORESCU", "-aec", "VESALIUS", "127.0.0.1",
                        str(server.dicom_port), str(patient["ct-head"][0])], env=TCP, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0
    time.sleep(1.5)
    receipts = requests.get(f"{server.base}/api/v1/transfers/receipts",
                            params={"queue": "prefetch:pacs", "study": new_uid}, headers=auth, timeout=30).json()
    assert len(receipts) == 1, receipts
    jobs = requests.get(f"{server.base}/api/v1/transfers/jobs", headers=auth, timeout=30).json()
    assert [j for j in jobs if j["queue"] in ("prefetch:pacs", "retrieve:pacs")] == [], jobs

    # Audited: the queries at the node naming the patient (command line, API, the prefetch as the
    # system), the retrieval request, and the node's stores.
    r = subprocess.run([BIN, "audit", "--data-dir", str(server.data_dir), "search", "--action", "query",
                        "--patient", f"{ISSUER}/{PATIENT}", "--json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    queries = [e["event"] for e in json.loads(r.stdout)]
    assert {q["actor"]["kind"] for q in queries} >= {"system", "token"}, queries
    assert all(q["details"]["node"] == "pacs" and q["details"]["operation"] == "C-FIND" for q in queries)
    assert any(q["details"].get("prefetch_for") == new_uid for q in queries)
    r = subprocess.run([BIN, "audit", "--data-dir", str(server.data_dir), "search", "--action", "store",
                        "--actor", "ORTHANC", "--study", mr_uid, "--json"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and json.loads(r.stdout), r.stdout + r.stderr


def test_a_node_that_cannot_reach_us_parks_the_retrieval_with_its_reason(tmp_path, patient):
    server = Server(tmp_path / "data", callers=DEFAULT_CALLERS + [caller("ORTHANC")],
                    extra_env={"VESALIUS__EXCHANGE__POLL_MS": "200",
                               "VESALIUS__EXCHANGE__MAX_ATTEMPTS": "1"})
    # Orthanc knows VESALIUS (so it answers its queries) at a port where nobody listens.
    orthanc = Orthanc(tmp_path / "orthanc", {"vesalius": ["VESALIUS", "127.0.0.1", free_port()]})
    try:
        orthanc.store(patient["mr-brain"])
        r = admin(server.data_dir, "node", "add", "pacs", "--ae-title", "ORTHANC", "--host", "127.0.0.1",
                  "--port", str(orthanc.dicom_port), "--org", "default")
        assert r.returncode == 0, r.stderr
        mr_uid = study_uid(patient["mr-brain"])
        r = admin(server.data_dir, "node", "retrieve", "pacs", "--study", mr_uid, "--wait", "--wait-secs", "60")
        assert r.returncode != 0
        assert "parked" in r.stderr and "C-MOVE from pacs (ORTHANC)" in r.stderr, r.stderr
        assert held(server.data_dir, mr_uid) == []
        # A node that does not answer: the C-FIND fails with a clear message.
        r = admin(server.data_dir, "node", "add", "gone", "--ae-title", "GONE", "--host", "127.0.0.1",
                  "--port", str(free_port()), "--org", "default")
        assert r.returncode == 0
        r = admin(server.data_dir, "node", "find", "gone", "--patient-id", PATIENT)
        assert r.returncode != 0 and "C-FIND" in r.stderr, r.stderr
    finally:
        server.kill()
        orthanc.stop()
