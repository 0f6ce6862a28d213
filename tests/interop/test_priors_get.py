"""Issue 5, black box: priors by C-GET, and relevant priors. Real C-GET SCPs play the legacy PACS:
DCMTK `dcmqrscp` (a config file with one AE title and a storage area, filled by DCMTK `storescu`)
and Orthanc (Debian package, C-GET SCP since 1.7). Neither knows an address for Vesalius, so a
C-MOVE could not bring anything back: the nodes are registered with `--retrieve get`, and the
instances come back on Vesalius' own association.

- `vesalius admin node retrieve --wait` by C-GET from dcmqrscp brings a study in, byte for byte
  what the PACS holds; the same PACS as a `move` node fails with 0xA801 (it does not
  know our AE title as a destination);
- a `prefetch:qr?max=3&years=5&match=modality,body-part` route: the PACS holds the patient's CT
  head of 2023, an MR knee of 2025 and a CT head of 2015; when a new CT head arrives only the
  2023 CT head is retrieved (dcmqrscp answers no Modalities in Study: the series tell);
- C-GET from Orthanc of an RLE Lossless CT: stored as Orthanc holds it (the context proposed for
  RLE from the study's SOP Classes in Study), with receipts.
"""

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from conftest import BIN, DEFAULT_CALLERS, Server, dcm_files, dcmtk
from test_priors import ORTHANC, Orthanc, admin, data_set, free_port, held, study_uid, wait_for

TCP = {**os.environ, "TCP_NODELAY": "1"}
PATIENT = "VS39092631"  # the patient of `vesalius synth --seed 7`
EXCHANGE_ENV = {"VESALIUS__EXCHANGE__ROUTE_REFRESH_MS": "200",
                "VESALIUS__EXCHANGE__POLL_MS": "200",
                "VESALIUS__EXCHANGE__PREFETCH_DELAY_MS": "500",
                "VESALIUS__EXCHANGE__BACKOFF_BASE_MS": "200",
                "VESALIUS__EXCHANGE__BACKOFF_MAX_MS": "1000",
                "VESALIUS__EXCHANGE__MAX_ATTEMPTS": "2"}


def derive(files, out: Path, tag: str, **changes):
    """Copies of a study's files with new Study, Series and SOP Instance UIDs (derived from
    `tag`) and the attributes in `changes` (keyword=value), in the files' own syntax."""
    import pydicom
    from pydicom.uid import generate_uid
    out.mkdir(parents=True, exist_ok=True)
    uids = {}

    def new(old):
        return uids.setdefault(old, generate_uid(prefix=None, entropy_srcs=[tag, old]))
    result = []
    for f in files:
        ds = pydicom.dcmread(f)
        ds.StudyInstanceUID = new(ds.StudyInstanceUID)
        ds.SeriesInstanceUID = new(ds.SeriesInstanceUID)
        ds.SOPInstanceUID = new(ds.SOPInstanceUID)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        for k, v in changes.items():
            setattr(ds, k, v)
        p = out / f"{tag}-{len(result):03d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        result.append(p)
    return result


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """The synthetic patient's studies: new-ct (arrives at Vesalius), ct-2023 (the relevant
    prior), mr-knee-2025, ct-2015 (too old) and ct-rle (synth's RLE Lossless CT prior)."""
    out = tmp_path_factory.mktemp("synth")
    subprocess.run([BIN, "synth", "--out", str(out), "--seed", "7", "--slices", "4"],
                   check=True, capture_output=True, timeout=120)
    by_kind = {}
    for p in dcm_files(out):
        if PATIENT in str(p):
            by_kind.setdefault(p.parent.parent.name.split("_", 1)[1], []).append(p)
    d = tmp_path_factory.mktemp("derived")
    ct, mr = by_kind["ct-head"], by_kind["mr-brain"]
    return {
        "new-ct": ct,
        "ct-2023": derive(ct, d / "ct-2023", "ct-2023", StudyDate="20230601"),
        "mr-knee-2025": derive(mr, d / "mr-knee", "mr-knee-2025", StudyDate="20250310",
                               BodyPartExamined="KNEE", StudyDescription="MR KNEE WO CONTRAST",
                               SeriesDescription="SAG PD"),
        "ct-2015": derive(ct, d / "ct-2015", "ct-2015", StudyDate="20150101"),
        "ct-rle": by_kind["ct-head-prior"],
    }


class Dcmqrscp:
    """DCMTK's reference Q/R SCP (C-FIND, C-MOVE, C-GET) with one AE title and a storage area; it
    knows no move destinations unless `hosts` names some (`AE: (host, port)`), and takes extra
    command line `args` (e.g. `-QS`: Patient Root models only)."""

    AE = "DCMQR"

    def __init__(self, workdir: Path, args=(), hosts=None):
        self.port = free_port()
        self.store_dir = workdir / "store"
        self.store_dir.mkdir(parents=True)
        cfg = workdir / "dcmqrscp.cfg"
        hosts_table = "".join(f"{ae.lower()} = ({ae}, {h}, {p})\n" for ae, (h, p) in (hosts or {}).items())
        cfg.write_text(f"""NetworkTCPPort  = {self.port}
MaxPDUSize      = 16384
MaxAssociations = 16

HostTable BEGIN
{hosts_table}HostTable END

VendorTable BEGIN
VendorTable END

AETable BEGIN
{self.AE}  {self.store_dir}  RW  (200, 1024mb)  ANY
AETable END
""")
        self.log_path = workdir / "dcmqrscp.log"
        self.log = open(self.log_path, "w")
        # Its own session: it forks a child per association, ended with it (by its group id).
        self.proc = subprocess.Popen([dcmtk("dcmqrscp"), "-c", str(cfg), "-v", *args], stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=TCP,
                                     start_new_session=True)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"dcmqrscp did not start: {self.log_path.read_text()[-2000:]}")

    def store(self, files):
        r = subprocess.run([dcmtk("storescu"), "-aec", self.AE, "127.0.0.1", str(self.port),
                            *map(str, files)], env=TCP, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr

    def held(self, study):
        """Data sets of the files it stores for `study` (in the syntax it negotiated when they
        were stored: dcmqrscp prefers Explicit VR Little Endian)."""
        import pydicom
        return sorted(data_set(p.read_bytes()) for p in self.store_dir.glob("*.dcm")
                      if pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID == study)

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()


@pytest.fixture
def qr(tmp_path):
    scp = Dcmqrscp(tmp_path / "dcmqrscp")
    yield scp
    scp.stop()


def sent(files):
    return sorted(data_set(p.read_bytes()) for p in files)


def token(server):
    return json.loads(admin(server.data_dir, "token", "create", "--org", "default", "--role", "admin",
                            "--name", "priors", "--json").stdout)["token"]


def test_c_get_from_dcmqrscp_which_cannot_reach_us(tmp_path, qr, studies):
    qr.store(studies["mr-knee-2025"])
    server = Server(tmp_path / "data", extra_env=EXCHANGE_ENV)
    try:
        r = admin(server.data_dir, "node", "add", "qr", "--ae-title", qr.AE, "--host", "127.0.0.1",
                  "--port", str(qr.port), "--org", "default", "--retrieve", "get")
        assert r.returncode == 0 and "retrieved from by C-GET" in r.stdout, r.stdout + r.stderr
        r = admin(server.data_dir, "node", "list", "--json")
        assert json.loads(r.stdout)[0]["retrieve"] == "get", r.stdout
        knee = study_uid(studies["mr-knee-2025"])

        r = admin(server.data_dir, "node", "retrieve", "qr", "--study", knee, "--wait", "--wait-secs", "120")
        assert r.returncode == 0, r.stdout + r.stderr + server.log_path.read_text()[-3000:]
        n = len(studies["mr-knee-2025"])
        assert "retrieved: C-GET from qr (DCMQR)" in r.stdout and f"{n} held here" in r.stdout, r.stdout
        # dcmqrscp answers neither SOP Classes in Study nor Modalities in Study: the storage
        # classes proposed are those of its series' modality (MR, Enhanced MR, Secondary Capture),
        # each with every compressed syntax, not the common set of 26.
        assert 'proposing 3 storage classes for modalities ["MR"]' in server.log_path.read_text()
        # Byte for byte what the PACS holds (it stored the implicit-VR MR as explicit VR).
        at_pacs = qr.held(knee)
        assert len(at_pacs) == n and held(server.data_dir, knee) == at_pacs
        auth = {"Authorization": f"Bearer {token(server)}"}
        rsp = requests.get(f"{server.base}/api/v1/transfers", headers=auth, timeout=30)
        t = [x for x in rsp.json() if x["queue"] == "retrieve:qr" and x["study_uid"] == knee]
        assert t and t[0]["delivered"] == n and t[0]["complete_ms"] > 0, rsp.json()
        # The node's stores are audited as the node's AE title, like those of a C-MOVE.
        r = subprocess.run([BIN, "audit", "--data-dir", str(server.data_dir), "search", "--action", "store",
                            "--actor", qr.AE, "--study", knee, "--json"], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0 and json.loads(r.stdout), r.stdout + r.stderr

        # The same PACS as a C-MOVE node: it knows no destination VESALIUS, and the job says so.
        r = admin(server.data_dir, "node", "add", "qr-move", "--ae-title", qr.AE, "--host", "127.0.0.1",
                  "--port", str(qr.port), "--org", "default")
        assert r.returncode == 0, r.stderr
        ct = study_uid(studies["ct-2023"])
        qr.store(studies["ct-2023"])
        r = admin(server.data_dir, "node", "retrieve", "qr-move", "--study", ct, "--wait", "--wait-secs", "60")
        assert r.returncode != 0 and "parked" in r.stderr, r.stdout + r.stderr
        assert "0xA801" in r.stderr and "does not know our AE title VESALIUS" in r.stderr, r.stderr
        assert held(server.data_dir, ct) == []
        # An unknown method is refused with the choices.
        r = admin(server.data_dir, "node", "add", "x", "--ae-title", "X", "--host", "127.0.0.1",
                  "--port", "104", "--org", "default", "--retrieve", "c-get")
        assert r.returncode != 0 and "move (C-MOVE) or get (C-GET)" in r.stderr, r.stderr
    finally:
        server.kill()


def test_prefetch_retrieves_only_the_relevant_prior(tmp_path, qr, studies):
    qr.store(studies["ct-2023"] + studies["mr-knee-2025"] + studies["ct-2015"])
    server = Server(tmp_path / "data", extra_env=EXCHANGE_ENV)
    try:
        r = admin(server.data_dir, "node", "add", "qr", "--ae-title", qr.AE, "--host", "127.0.0.1",
                  "--port", str(qr.port), "--org", "default", "--retrieve", "get")
        assert r.returncode == 0, r.stderr
        r = admin(server.data_dir, "route", "add", "ct-priors", "--org", "default", "--modality", "CT",
                  "--to", "prefetch:qr?max=3&years=5&match=modality,body-part")
        assert r.returncode == 0, r.stdout + r.stderr
        r = admin(server.data_dir, "route", "list", "--json")
        dest = json.loads(r.stdout)[0]["destinations"][0]["prefetch"]
        assert dest == {"node": "qr", "max": 3, "years": 5, "match": ["modality", "body-part"]}, dest
        time.sleep(1.0)  # routes reload every 200 ms here

        r = subprocess.run([dcmtk("storescu"), "-aet", "STORESCU", "-aec", "VESALIUS", "127.0.0.1",
                            str(server.dicom_port), *map(str, studies["new-ct"])], env=TCP,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        new, ct23 = study_uid(studies["new-ct"]), study_uid(studies["ct-2023"])
        want = qr.held(ct23)
        assert len(want) == len(studies["ct-2023"])
        wait_for(lambda: held(server.data_dir, ct23) == want, 90,
                 f"the 2023 CT head: {server.log_path.read_text()[-3000:]}")
        auth = {"Authorization": f"Bearer {token(server)}"}

        def settled():
            jobs = requests.get(f"{server.base}/api/v1/transfers/jobs", headers=auth, timeout=30).json()
            return not [j for j in jobs if j["queue"] in ("prefetch:qr", "retrieve:qr")]
        wait_for(settled, 30, "the prefetch jobs to finish")
        assert held(server.data_dir, study_uid(studies["mr-knee-2025"])) == []
        assert held(server.data_dir, study_uid(studies["ct-2015"])) == []
        receipts = requests.get(f"{server.base}/api/v1/transfers/receipts", params={"queue": "prefetch:qr"},
                                headers=auth, timeout=30).json()
        mine = [x for x in receipts if x["study_uid"] == new and x["kind"] == "study"]
        assert len(mine) == 1, receipts
        assert ("2 other studies of the patient at qr, 1 not relevant by modality and body-part, "
                "1 most recent kept, 0 already here, 1 to retrieve") in mine[0]["detail"], mine
        got = requests.get(f"{server.base}/api/v1/transfers/receipts", params={"queue": "retrieve:qr"},
                           headers=auth, timeout=30).json()
        assert {x["study_uid"] for x in got} == {ct23}, got
    finally:
        server.kill()


def test_c_get_from_orthanc_keeps_the_stored_syntax(tmp_path, studies):
    if not Path(ORTHANC).exists():
        pytest.skip("Orthanc not installed")
    server = Server(tmp_path / "data", extra_env=EXCHANGE_ENV)
    # Orthanc knows VESALIUS (so it answers its queries) at a port where nobody listens: only a
    # C-GET can bring anything back.
    orthanc = Orthanc(tmp_path / "orthanc", {"vesalius": ["VESALIUS", "127.0.0.1", free_port()]})
    try:
        rle = studies["ct-rle"]
        orthanc.store(rle)
        r = admin(server.data_dir, "node", "add", "pacs", "--ae-title", "ORTHANC", "--host", "127.0.0.1",
                  "--port", str(orthanc.dicom_port), "--org", "default", "--retrieve", "get")
        assert r.returncode == 0, r.stderr
        uid = study_uid(rle)
        r = admin(server.data_dir, "node", "retrieve", "pacs", "--study", uid, "--wait", "--wait-secs", "120")
        assert r.returncode == 0, r.stdout + r.stderr + server.log_path.read_text()[-3000:]
        assert "C-GET from pacs (ORTHANC)" in r.stdout and f"{len(rle)} held here" in r.stdout, r.stdout
        assert held(server.data_dir, uid) == sent(rle)
        import pydicom
        blobs = [p for p in (server.data_dir / "blobs" / "default" / uid).rglob("*") if p.is_file()]
        assert {str(pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID) for p in blobs} \
            == {"1.2.840.10008.1.2.5"}
    finally:
        server.kill()
        orthanc.stop()
