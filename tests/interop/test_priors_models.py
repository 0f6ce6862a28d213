"""Issue 5, black box: priors from a PACS that answers only Patient Root, and relevant priors
matched by coded anatomy.

- DCMTK `dcmqrscp -QS` (no Study Root models: every Study Root context is refused) plays a
  Patient Root-only PACS. A node registered with the default Study Root model cannot even query
  it; registered with `--query-model patient` it is asked at PATIENT then STUDY level
  (`node find`), a prefetch finds, judges (series-level C-FIND with the Patient ID) and
  retrieves a prior by Patient Root C-GET, and `node retrieve --patient-id` moves another by
  Patient Root C-MOVE; both byte for byte what the PACS holds.
- Orthanc (it returns the Anatomic Region Sequence (0008,2218) at series level) holds two CT
  priors that carry only a coded region (no Body Part Examined, a Study Description naming no
  region): SNOMED CT "Brain" and "Knee joint". A new CT coded "Head" (SRT T-D1100, likewise no
  Body Part Examined) arrives with a `match=modality,body-part` prefetch route: only the brain
  prior is retrieved.
- Orthanc (it returns the Procedure Code Sequence (0008,1032) at study level and Laterality
  (0020,0060) at series level) holds four MR priors of the patient; a left knee MR coded LOINC
  36510-6 arrives with a `match=modality,body-part,procedure,laterality` route: the prior with
  the same code but a leg body part is retrieved, and so is the left knee; the right knee (its
  series say R) and a leg MR with another code are not. Likewise when the arriving left knee is
  an Enhanced MR whose side is only in its Frame Laterality (0020,9072).
- The same route against DCMTK `dcmqrscp`, whose index returns neither sequences nor
  Laterality: the sides its Study Descriptions name decide (`MR KNEE RIGHT` dropped, `MR KNEE
  LEFT` kept), while a prior whose side is only in its Laterality attribute is kept (no side
  known) and one related only by its procedure code is not (no code known).
"""

import json
import subprocess
import time
from pathlib import Path

import pytest
import requests

from conftest import BIN, DEFAULT_CALLERS, Server, caller, dcm_files, dcmtk
from test_priors import ORTHANC, Orthanc, admin, free_port, held, study_uid, wait_for
from test_priors_get import EXCHANGE_ENV, PATIENT, TCP, Dcmqrscp, derive, token


def recode(files, out: Path, tag: str, study_date: str, description: str, code):
    """Copies of a study with new UIDs, `study_date` and `description`, no Body Part Examined,
    and an Anatomic Region Sequence of one item `code` = (value, scheme, meaning)."""
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    result = []
    for p in derive(files, out, tag, StudyDate=study_date, StudyDescription=description,
                    SeriesDescription="Series 1"):
        ds = pydicom.dcmread(p)
        if "BodyPartExamined" in ds:
            del ds.BodyPartExamined
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code
        ds.AnatomicRegionSequence = Sequence([item])
        ds.save_as(p, enforce_file_format=True)
        result.append(p)
    return result


def mr_prior(files, out: Path, tag: str, study_date: str, description: str, body_part: str,
             laterality: str = "", code=None, frame_laterality: str = ""):
    """Copies of an MR study with new UIDs, and the given Study Date, Study Description, Body
    Part Examined, Laterality (0020,0060, none when empty) and Procedure Code Sequence of one
    item `code` = (value, scheme, meaning), none when `None`. With `frame_laterality`: an
    Enhanced MR Image (one frame) whose side is only in the Frame Laterality (0020,9072) of its
    Shared Functional Groups' Frame Anatomy (PS3.3 C.7.6.16.2.8)."""
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    result = []
    for p in derive(files, out, tag, StudyDate=study_date, StudyDescription=description,
                    BodyPartExamined=body_part):
        ds = pydicom.dcmread(p)
        for k in ("Laterality", "ImageLaterality", "ProcedureCodeSequence"):
            if k in ds:
                delattr(ds, k)
        if laterality:
            ds.Laterality = laterality
        if code:
            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code
            ds.ProcedureCodeSequence = Sequence([item])
        if frame_laterality:
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"
            ds.NumberOfFrames = 1
            anatomy = Dataset()
            anatomy.FrameLaterality = frame_laterality
            region = Dataset()
            region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning = ("72696002", "SCT", "Knee")
            anatomy.AnatomicRegionSequence = Sequence([region])
            shared = Dataset()
            shared.FrameAnatomySequence = Sequence([anatomy])
            ds.SharedFunctionalGroupsSequence = Sequence([shared])
        ds.save_as(p, enforce_file_format=True)
        result.append(p)
    return result


MR_KNEE = ("36510-6", "LN", "MR Knee")


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    subprocess.run([BIN, "synth", "--out", str(out), "--seed", "7", "--slices", "3"],
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
                               BodyPartExamined="KNEE", StudyDescription="MR KNEE WO CONTRAST"),
        "coded-new": recode(ct, d / "coded-new", "coded-new", "20261201", "Emergency",
                            ("T-D1100", "SRT", "Head")),
        "coded-brain": recode(ct, d / "coded-brain", "coded-brain", "20240105", "Study 1",
                              ("12738006", "SCT", "Brain")),
        "coded-knee": recode(ct, d / "coded-knee", "coded-knee", "20250105", "Study 2",
                             ("49076000", "SCT", "Knee joint")),
        "left-knee-new": mr_prior(mr, d / "lk-new", "lk-new", "20261201", "MR KNEE", "KNEE",
                                  "L", MR_KNEE),
        "left-knee-enhanced-new": mr_prior(mr, d / "lke-new", "lke-new", "20261201", "MR KNEE",
                                           "KNEE", "", MR_KNEE, frame_laterality="L"),
        "right-knee": mr_prior(mr, d / "rk", "rk", "20250901", "MR KNEE", "KNEE", "R"),
        "same-code": mr_prior(mr, d / "same", "same", "20250301", "MR LE jt", "LEG", "",
                              MR_KNEE),
        "left-knee": mr_prior(mr, d / "lk", "lk", "20240601", "MR KNEE", "KNEE", "L"),
        "rk-text": mr_prior(mr, d / "rk-text", "rk-text", "20250901", "MR KNEE RIGHT", "KNEE", "R"),
        "lk-text": mr_prior(mr, d / "lk-text", "lk-text", "20240601", "MR KNEE LEFT", "KNEE", "L"),
        "knee-r-attr": mr_prior(mr, d / "kra", "kra", "20240301", "MR KNEE", "KNEE", "R"),
        "other-code": mr_prior(mr, d / "other", "other", "20240101", "MR LE jt", "LEG", "",
                               ("24590-2", "LN", "MR Lower leg")),
    }


def settled(server, auth, queues):
    jobs = requests.get(f"{server.base}/api/v1/transfers/jobs", headers=auth, timeout=30).json()
    return not [j for j in jobs if j["queue"] in queues]


def study_receipt(server, auth, queue, study):
    got = requests.get(f"{server.base}/api/v1/transfers/receipts", params={"queue": queue},
                       headers=auth, timeout=30).json()
    mine = [x for x in got if x["study_uid"] == study and x["kind"] == "study"]
    assert len(mine) == 1, got
    return mine[0]["detail"]


def test_a_patient_root_only_pacs(tmp_path, studies):
    server = Server(tmp_path / "data", extra_env=EXCHANGE_ENV,
                    callers=DEFAULT_CALLERS + [caller(Dcmqrscp.AE)])
    qr = Dcmqrscp(tmp_path / "dcmqrscp", args=["-QS", "-QO"],
                  hosts={"VESALIUS": ("127.0.0.1", server.dicom_port)})
    try:
        qr.store(studies["ct-2023"] + studies["mr-knee-2025"])
        ct23, knee = study_uid(studies["ct-2023"]), study_uid(studies["mr-knee-2025"])
        common = ["--ae-title", qr.AE, "--host", "127.0.0.1", "--port", str(qr.port), "--org", "default"]

        # Study Root, the default: the PACS refuses the model.
        r = admin(server.data_dir, "node", "add", "qr-study", *common)
        assert r.returncode == 0 and "queried in Study Root" in r.stdout, r.stdout + r.stderr
        r = admin(server.data_dir, "node", "find", "qr-study", "--patient-id", PATIENT)
        assert r.returncode != 0 and "1.2.840.10008.5.1.4.1.2.2.1" in r.stderr, r.stdout + r.stderr
        assert "set its query model to patient" in r.stderr, r.stderr

        # Patient Root: PATIENT then STUDY level.
        r = admin(server.data_dir, "node", "add", "qr", *common, "--retrieve", "get", "--query-model", "patient")
        assert r.returncode == 0 and "queried in Patient Root" in r.stdout, r.stdout + r.stderr
        r = admin(server.data_dir, "node", "list", "--json")
        models = {n["name"]: n["query_model"] for n in json.loads(r.stdout)}
        assert models == {"qr-study": "study", "qr": "patient"}, r.stdout
        r = admin(server.data_dir, "node", "find", "qr", "--patient-id", PATIENT, "--json")
        assert r.returncode == 0, r.stdout + r.stderr + qr.log_path.read_text()[-3000:]
        found = {s["study_uid"]: s for s in json.loads(r.stdout)}
        assert set(found) == {ct23, knee}, found
        assert found[knee]["description"] == "MR KNEE WO CONTRAST"
        assert found[knee]["study_date"] == "20250310" and found[ct23]["study_date"] == "20230601"
        # The patient's name comes from the PATIENT-level answer.
        assert found[ct23]["patient_name"] and found[ct23]["patient_id"] == PATIENT, found[ct23]
        r = admin(server.data_dir, "node", "find", "qr", "--patient-id", "NOBODY", "--json")
        assert r.returncode == 0 and json.loads(r.stdout) == [], r.stdout + r.stderr
        auth = {"Authorization": f"Bearer {token(server)}"}
        rsp = requests.get(f"{server.base}/api/v1/nodes/qr/studies", params={"PatientID": PATIENT},
                           headers=auth, timeout=60)
        assert rsp.status_code == 200 and {s["study_uid"] for s in rsp.json()} == {ct23, knee}, rsp.text

        # A prefetch through Patient Root: dcmqrscp answers no Modalities in Study, so the
        # series (SERIES level, with the Patient ID) decide; the CT head comes by C-GET.
        r = admin(server.data_dir, "route", "add", "ct-priors", "--org", "default", "--modality", "CT",
                  "--to", "prefetch:qr?max=3&match=modality,body-part")
        assert r.returncode == 0, r.stdout + r.stderr
        time.sleep(1.0)  # routes reload every 200 ms here
        r = subprocess.run([dcmtk("storescu"), "-aet", "STORESCU", "-aec", "VESALIUS", "127.0.0.1",
                            str(server.dicom_port), *map(str, studies["new-ct"])], env=TCP,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        want = qr.held(ct23)
        assert len(want) == len(studies["ct-2023"])
        wait_for(lambda: held(server.data_dir, ct23) == want, 90,
                 f"the 2023 CT head: {server.log_path.read_text()[-3000:]}")
        wait_for(lambda: settled(server, auth, ("prefetch:qr", "retrieve:qr")), 30, "the prefetch jobs")
        assert held(server.data_dir, knee) == []
        detail = study_receipt(server, auth, "prefetch:qr", study_uid(studies["new-ct"]))
        assert ("2 other studies of the patient at qr, 1 not relevant by modality and body-part, "
                "1 most recent kept, 0 already here, 1 to retrieve") in detail, detail
        assert "C-GET from qr (DCMQR)" in study_receipt(server, auth, "retrieve:qr", ct23)

        # Patient Root C-MOVE (to our AE title, which dcmqrscp knows here): the Patient ID is
        # required, and then the study comes.
        r = admin(server.data_dir, "node", "add", "qr-move", *common, "--query-model", "patient")
        assert r.returncode == 0, r.stderr
        r = admin(server.data_dir, "node", "retrieve", "qr-move", "--study", knee)
        assert r.returncode != 0 and "--patient-id" in r.stderr, r.stdout + r.stderr
        rsp = requests.post(f"{server.base}/api/v1/nodes/qr-move/retrieve", json={"study_uid": knee},
                            headers=auth, timeout=30)
        assert rsp.status_code == 400 and rsp.json()["error"] == "bad-request", rsp.text
        assert "Patient Root" in rsp.json()["message"], rsp.text
        r = admin(server.data_dir, "node", "retrieve", "qr-move", "--study", knee, "--patient-id", PATIENT,
                  "--wait", "--wait-secs", "120")
        assert r.returncode == 0, r.stdout + r.stderr + qr.log_path.read_text()[-3000:]
        n = len(studies["mr-knee-2025"])
        assert "retrieved: C-MOVE from qr-move (DCMQR)" in r.stdout and f"{n} held here" in r.stdout, r.stdout
        assert held(server.data_dir, knee) == qr.held(knee)
        # The queries were audited with their model.
        r = subprocess.run([BIN, "audit", "--data-dir", str(server.data_dir), "search", "--action", "query",
                            "--json"], capture_output=True, text=True, timeout=60)
        models = {e["event"]["details"].get("node"): e["event"]["details"].get("model")
                  for e in json.loads(r.stdout)}
        assert models.get("qr") == "patient-root" and models.get("qr-study") == "study-root", models
    finally:
        server.kill()
        qr.stop()


def test_priors_matched_by_coded_anatomic_region(tmp_path, studies):
    if not Path(ORTHANC).exists():
        pytest.skip("Orthanc not installed")
    server = Server(tmp_path / "data", extra_env=EXCHANGE_ENV)
    # Orthanc knows VESALIUS (so it answers its queries) at a port where nobody listens: C-GET.
    orthanc = Orthanc(tmp_path / "orthanc", {"vesalius": ["VESALIUS", "127.0.0.1", free_port()]})
    try:
        orthanc.store(studies["coded-brain"] + studies["coded-knee"])
        brain, knee = study_uid(studies["coded-brain"]), study_uid(studies["coded-knee"])
        r = admin(server.data_dir, "node", "add", "pacs", "--ae-title", "ORTHANC", "--host", "127.0.0.1",
                  "--port", str(orthanc.dicom_port), "--org", "default", "--retrieve", "get")
        assert r.returncode == 0, r.stderr
        r = admin(server.data_dir, "route", "add", "ct-priors", "--org", "default", "--modality", "CT",
                  "--to", "prefetch:pacs?max=3&match=modality,body-part")
        assert r.returncode == 0, r.stdout + r.stderr
        time.sleep(1.0)
        new = studies["coded-new"]
        r = subprocess.run([dcmtk("storescu"), "-aet", "STORESCU", "-aec", "VESALIUS", "127.0.0.1",
                            str(server.dicom_port), *map(str, new)], env=TCP,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        auth = {"Authorization": f"Bearer {token(server)}"}
        wait_for(lambda: len(held(server.data_dir, brain)) == len(studies["coded-brain"]), 90,
                 f"the coded brain prior: {server.log_path.read_text()[-3000:]}")
        wait_for(lambda: settled(server, auth, ("prefetch:pacs", "retrieve:pacs")), 30, "the prefetch jobs")
        assert held(server.data_dir, knee) == [], "the knee is not the head"
        detail = study_receipt(server, auth, "prefetch:pacs", study_uid(new))
        assert ("2 other studies of the patient at pacs, 1 not relevant by modality and body-part, "
                "1 most recent kept, 0 already here, 1 to retrieve") in detail, detail
        import pydicom
        stored = [pydicom.dcmread(p, stop_before_pixels=True)
                  for p in (server.data_dir / "blobs" / "default" / brain).rglob("*") if p.is_file()]
        assert stored and all("BodyPartExamined" not in ds for ds in stored)
        assert {ds.AnatomicRegionSequence[0].CodeValue for ds in stored} == {"12738006"}
    finally:
        server.kill()
        orthanc.stop()


# The arriving left knee states its side in Laterality, or (an Enhanced MR) only in Frame
# Laterality.
@pytest.mark.parametrize("arriving", ["left-knee-new", "left-knee-enhanced-new"])
def test_priors_matched_by_procedure_code_and_laterality(tmp_path, studies, arriving):
    if not Path(ORTHANC).exists():
        pytest.skip("Orthanc not installed")
    server = Server(tmp_path / "data", extra_env=EXCHANGE_ENV)
    orthanc = Orthanc(tmp_path / "orthanc", {"vesalius": ["VESALIUS", "127.0.0.1", free_port()]})
    try:
        names = ("right-knee", "same-code", "left-knee", "other-code")
        orthanc.store([f for n in names for f in studies[n]])
        uid = {n: study_uid(studies[n]) for n in names}
        r = admin(server.data_dir, "node", "add", "pacs", "--ae-title", "ORTHANC", "--host", "127.0.0.1",
                  "--port", str(orthanc.dicom_port), "--org", "default", "--retrieve", "get")
        assert r.returncode == 0, r.stderr
        r = admin(server.data_dir, "route", "add", "mr-priors", "--org", "default", "--modality", "MR",
                  "--to", "prefetch:pacs?max=3&match=modality,body-part,procedure,laterality")
        assert r.returncode == 0, r.stdout + r.stderr
        time.sleep(1.0)
        new = studies[arriving]
        r = subprocess.run([dcmtk("storescu"), "-aet", "STORESCU", "-aec", "VESALIUS", "127.0.0.1",
                            str(server.dicom_port), *map(str, new)], env=TCP,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        auth = {"Authorization": f"Bearer {token(server)}"}
        for n in ("same-code", "left-knee"):
            wait_for(lambda: len(held(server.data_dir, uid[n])) == len(studies[n]), 90,
                     f"the {n} prior: {server.log_path.read_text()[-3000:]}")
        wait_for(lambda: settled(server, auth, ("prefetch:pacs", "retrieve:pacs")), 30, "the prefetch jobs")
        assert held(server.data_dir, uid["right-knee"]) == [], "the right knee is the other side"
        assert held(server.data_dir, uid["other-code"]) == [], "another code, a leg: not the knee"
        detail = study_receipt(server, auth, "prefetch:pacs", study_uid(new))
        assert ("4 other studies of the patient at pacs, 2 not relevant by modality and body-part "
                "and procedure and laterality, 2 most recent kept, 0 already here, 2 to retrieve"
                ) in detail, detail
    finally:
        server.kill()
        orthanc.stop()


def test_laterality_from_descriptions_at_a_node_without_the_keys(tmp_path, studies):
    server = Server(tmp_path / "data", extra_env=EXCHANGE_ENV)
    qr = Dcmqrscp(tmp_path / "dcmqrscp")
    try:
        names = ("rk-text", "same-code", "lk-text", "knee-r-attr")
        qr.store([f for n in names for f in studies[n]])
        uid = {n: study_uid(studies[n]) for n in names}
        r = admin(server.data_dir, "node", "add", "qr", "--ae-title", qr.AE, "--host", "127.0.0.1",
                  "--port", str(qr.port), "--org", "default", "--retrieve", "get")
        assert r.returncode == 0, r.stderr
        r = admin(server.data_dir, "route", "add", "mr-priors", "--org", "default", "--modality", "MR",
                  "--to", "prefetch:qr?max=3&match=modality,body-part,procedure,laterality")
        assert r.returncode == 0, r.stdout + r.stderr
        time.sleep(1.0)
        new = studies["left-knee-new"]
        r = subprocess.run([dcmtk("storescu"), "-aet", "STORESCU", "-aec", "VESALIUS", "127.0.0.1",
                            str(server.dicom_port), *map(str, new)], env=TCP,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        auth = {"Authorization": f"Bearer {token(server)}"}
        for n in ("lk-text", "knee-r-attr"):
            assert len(qr.held(uid[n])) == len(studies[n])
            wait_for(lambda: held(server.data_dir, uid[n]) == qr.held(uid[n]), 90,
                     f"the {n} prior: {server.log_path.read_text()[-3000:]}")
        wait_for(lambda: settled(server, auth, ("prefetch:qr", "retrieve:qr")), 30, "the prefetch jobs")
        assert held(server.data_dir, uid["rk-text"]) == [], "its description says right"
        assert held(server.data_dir, uid["same-code"]) == [], "dcmqrscp returns no procedure codes"
        detail = study_receipt(server, auth, "prefetch:qr", study_uid(new))
        assert ("4 other studies of the patient at qr, 2 not relevant by modality and body-part "
                "and procedure and laterality, 2 most recent kept, 0 already here, 2 to retrieve"
                ) in detail, detail
    finally:
        server.kill()
        qr.stop()
