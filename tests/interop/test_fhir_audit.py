"""FHIR AuditEvent export (vesalius-auth `fhir`), validated with PyPI `fhir.resources`.

The Rust test `fhir::tests::fhir_samples` writes one AuditEvent per audited action, and a Bundle
of them, into $VESALIUS_FHIR_OUT; here each is validated against the FHIR R4 model (`fhir.resources`
8 ships R5 as its default and R4B, whose AuditEvent is R4's, as a subpackage)."""

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

fhir = pytest.importorskip("fhir.resources", reason="PyPI fhir.resources is not installed")
from fhir.resources.R4B.auditevent import AuditEvent  # noqa: E402
from fhir.resources.R4B.bundle import Bundle  # noqa: E402


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    out = tmp_path_factory.mktemp("fhir")
    env = dict(os.environ, VESALIUS_FHIR_OUT=str(out))
    subprocess.run(
        ["cargo", "test", "-q", "-p", "vesalius-auth", "--lib", "fhir_samples", "--", "--nocapture"],
        cwd=ROOT,
        env=env,
        check=True,
    )
    files = sorted(out.glob("audit-event-*.json"))
    assert files, f"no samples written to {out}"
    return out, files


def test_every_sample_is_a_valid_r4_audit_event(samples):
    _, files = samples
    for path in files:
        event = AuditEvent.model_validate_json(path.read_text())
        assert event.agent and event.agent[0].requestor is True, path.name
        assert event.outcome in ("0", "4", "8"), path.name
        assert event.type.system == "http://dicom.nema.org/resources/ontology/DCM", path.name


def test_bundle_is_valid(samples):
    out, files = samples
    bundle = Bundle.model_validate_json((out / "bundle.json").read_text())
    assert len(bundle.entry) == len(files)


def test_break_glass_is_flagged_and_names_patient_and_study(samples):
    out, _ = samples
    raw = json.loads((out / "audit-event-break-glass.json").read_text())
    event = AuditEvent.model_validate(raw)
    assert event.subtype[0].code == "110127"  # Emergency Override Started
    assert event.purposeOfEvent[0].coding[0].code == "BTG"
    roles = {e.role.code for e in event.entity if e.role is not None}
    assert {"1", "3"} <= roles  # patient, study (report)
