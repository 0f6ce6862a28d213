"""Patient identity (issue 5, docs/patients.md) end to end through the command line: a server that
requires credentials, studies imported with `vesalius import`, then `vesalius admin patient
link|merge|split` against it; QIDO-RS answers after each step, the rewritten objects read back
over WADO-URI with pydicom (Original Attributes Sequence), prior versions, the audit trail, and
refusals (another organisation's token, bad input)."""

import io
import json
import os
import re
import subprocess

import pydicom
import pytest
import requests

from conftest import BIN, Server


def run(*args, token=None, check=True):
    env = dict(os.environ)
    env.pop("VESALIUS_TOKEN", None)
    if token:
        env["VESALIUS_TOKEN"] = token
    p = subprocess.run([BIN, *args], capture_output=True, text=True, env=env, timeout=120)
    if check and p.returncode != 0:
        raise AssertionError(f"vesalius {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    base = tmp_path_factory.mktemp("patients")
    data = base / "data"
    srv = Server(data, extra_env={"VESALIUS__AUTH__REQUIRED": "true"})
    try:
        # The first start has made organisation `default`; the rest is set up beside the server.
        run("admin", "org", "create", "elsewhere", "--data-dir", str(data))
        tokens = {}
        for org in ("default", "elsewhere"):
            out = run("admin", "token", "create", "--data-dir", str(data), "--org", org, "--role", "admin",
                      "--name", f"patients {org}", "--json")
            tokens[org] = json.loads(out.stdout)["token"]
        studies = {}
        for seed, kind in ((21, "ct-head"), (22, "mr-brain")):
            out = base / f"synth-{seed}"
            run("synth", "--out", str(out), "--seed", str(seed), "--slices", "2", "--kinds", kind)
            run("import", "--server", srv.base, str(out), token=tokens["default"])
            studies[kind] = out
        yield {"srv": srv, "data": data, "tokens": tokens}
    finally:
        srv.stop()


def qido(site, query, org="default"):
    r = requests.get(f"{site['srv'].dicomweb}/studies?{query}&includefield=00100021&includefield=00100040",
                     headers={"Authorization": f"Bearer {site['tokens'][org]}"}, timeout=30)
    assert r.status_code in (200, 204), r.text
    out = []
    for a in (r.json() if r.status_code == 200 else []):
        v = lambda t: (a.get(t, {}).get("Value") or [""])[0]  # noqa: E731
        name = v("00100010")
        out.append({"study": v("0020000D"), "issuer": v("00100021"), "id": v("00100020"),
                    "name": name.get("Alphabetic", "") if isinstance(name, dict) else name,
                    "sex": v("00100040"), "instances": int(v("00201208") or 0)})
    return sorted(out, key=lambda x: x["study"])


def patient(site, *args, org="default", check=True):
    return run("admin", "patient", *args, "--server", site["srv"].base, token=site["tokens"][org], check=check)


def first_instance(site, study):
    """The first instance of `study`, read back with pydicom over WADO-URI."""
    auth = {"Authorization": f"Bearer {site['tokens']['default']}"}
    base = site["srv"].dicomweb
    series = requests.get(f"{base}/studies/{study}/series", headers=auth, timeout=30).json()
    se = series[0]["0020000E"]["Value"][0]
    inst = requests.get(f"{base}/studies/{study}/series/{se}/instances", headers=auth, timeout=30).json()
    sop = inst[0]["00080018"]["Value"][0]
    r = requests.get(f"{site['srv'].base}/wado", headers=auth, timeout=30, params={
        "requestType": "WADO", "studyUID": study, "seriesUID": se, "objectUID": sop,
        "contentType": "application/dicom"})
    assert r.status_code == 200, r.text
    return pydicom.dcmread(io.BytesIO(r.content))


def test_link_merge_split_through_the_cli(site):
    everything = qido(site, "PatientID=*")
    assert len(everything) == 2, everything
    # Two synthetic studies (a CT and an MR, in UID order); "ct" and "mr" name them below.
    ct, mr = everything
    assert ct["issuer"] == mr["issuer"] == "VESALIUS-SYNTH"
    n_ct, n_mr = ct["instances"], mr["instances"]
    assert n_ct > 0 and n_mr > 0

    # Link the CT's patient to a local record.
    out = patient(site, "link", ct["study"], "--issuer", "NORTH", "--patient-id", "MRN1", "--name", "Doe^Jane",
                  "--birth-date", "19700102", "--sex", "f", "--json")
    v = json.loads(out.stdout)
    assert (v["instances"], v["changed"]) == (n_ct, n_ct)
    assert v["before"]["patient_id"] == ct["id"] and v["after"]["sex"] == "F"
    assert [(s["issuer"], s["id"], s["name"], s["sex"]) for s in qido(site, "PatientID=MRN1")] == [
        ("NORTH", "MRN1", "Doe^Jane", "F")]
    ds = first_instance(site, ct["study"])
    assert (ds.PatientID, ds.IssuerOfPatientID, str(ds.PatientName)) == ("MRN1", "NORTH", "Doe^Jane")
    orig = ds.OriginalAttributesSequence[-1]
    assert orig.ReasonForTheAttributeModification == "COERCE"
    assert orig.ModifyingSystem == "VESALIUS"
    old = orig.ModifiedAttributesSequence[0]
    assert (old.PatientID, old.IssuerOfPatientID) == (ct["id"], "VESALIUS-SYNTH")
    assert any(o.PatientID == ct["id"] for o in ds.OtherPatientIDsSequence)
    # The received objects are kept as prior versions.
    r = requests.get(f"{site['srv'].base}/api/v1/studies/{ct['study']}/versions",
                     headers={"Authorization": f"Bearer {site['tokens']['default']}"}, timeout=30)
    assert r.status_code == 200 and len(r.json()) == n_ct, r.text

    # The same link again changes nothing; the human-readable form says so.
    out = patient(site, "link", ct["study"], "--issuer", "NORTH", "--patient-id", "MRN1")
    assert re.search(rf"0 of {n_ct} instances rewritten", out.stdout), out.stdout

    # Merge the MR's patient into MRN1: both studies are MRN1's, with its demographics.
    out = patient(site, "merge", "--from", f"VESALIUS-SYNTH/{mr['id']}", "--into", "NORTH/MRN1")
    assert "NORTH/MRN1 (Doe^Jane)" in out.stdout, out.stdout
    both = qido(site, "PatientID=MRN1")
    assert sorted(s["study"] for s in both) == sorted([ct["study"], mr["study"]])
    assert {(s["name"], s["sex"]) for s in both} == {("Doe^Jane", "F")}
    assert qido(site, f"PatientID={mr['id']}") == []

    # Split the MR off again, to a patient of its own.
    out = patient(site, "split", mr["study"], "--issuer", "NORTH", "--patient-id", "MRN2", "--name", "Roe^Rick",
                  "--json")
    assert json.loads(out.stdout)["studies"][0]["changed"] == n_mr
    assert [s["study"] for s in qido(site, "PatientID=MRN1")] == [ct["study"]]
    assert [(s["study"], s["name"]) for s in qido(site, "PatientID=MRN2")] == [(mr["study"], "Roe^Rick")]

    # Another organisation sees none of it and changes none of it.
    assert qido(site, "PatientID=*", org="elsewhere") == []
    p = patient(site, "link", ct["study"], "--patient-id", "X", org="elsewhere", check=False)
    assert p.returncode != 0 and "404" in p.stderr, p.stderr
    # Bad input: a clear refusal.
    p = patient(site, "link", ct["study"], "--patient-id", "X", "--birth-date", "1970-01-02", check=False)
    assert p.returncode != 0 and "400" in p.stderr and "birth_date" in p.stderr, p.stderr
    p = patient(site, "merge", "--from", "NORTH/MRN2", "--into", "NORTH/NOBODY", check=False)
    assert p.returncode != 0 and "404" in p.stderr, p.stderr
    assert {s["study"]: s["id"] for s in qido(site, "PatientID=*")} == {ct["study"]: "MRN1", mr["study"]: "MRN2"}

    # The audit trail names each change with the patient before and after.
    out = run("audit", "search", "--data-dir", str(site["data"]), "--json")
    events = [r["event"] for r in json.loads(out.stdout)]
    actions = [e["action"] for e in events if e["action"].startswith("patient-")]
    assert sorted(actions) == sorted(["patient-link", "patient-link", "patient-merge", "patient-split"]), actions
    merge = next(e for e in events if e["action"] == "patient-merge")
    assert merge["study_uid"] == mr["study"] and merge["details"]["before"]["patient_id"] == mr["id"]
    assert run("audit", "verify", "--data-dir", str(site["data"])).returncode == 0
