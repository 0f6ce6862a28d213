"""Black-box fixtures: the real `vesalius` binary started on port 0 with a temp data directory,
and synthetic studies written by `vesalius synth`."""

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

BIN = os.environ.get("VESALIUS_BIN", str(Path(__file__).resolve().parents[2] / "target/debug/vesalius"))


def caller(ae_title, org="default", allowed_addrs=("127.0.0.1",), may_query=True, **extra):
    """One `[[dicom.callers]]` entry: a calling AE title the server admits (issue 4)."""
    return {"ae_title": ae_title, "org": org, "allowed_addrs": list(allowed_addrs), "may_query": may_query,
            **extra}


# The calling AE titles the suites use, seeded through the config file every Server writes:
# DCMTK's defaults, pynetdicom's, `vesalius echo|send` (calling as VESALIUS) and the titles the
# tests pass to pynetdicom's AE(ae_title=...).
DEFAULT_CALLERS = [caller(ae) for ae in (
    "ECHOSCU", "STORESCU", "FINDSCU", "GETSCU", "MOVESCU", "PYNETDICOM", "VESALIUS",
    "FULLDISK", "COMMITSCU", "METRICS", "CRASHTEST", "SYNCTEST", "TLSGET",
)]


def callers_toml(callers):
    """`[[dicom.callers]]` tables for `callers` (TOML basic strings are JSON strings here)."""
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v)
    return "".join("\n[[dicom.callers]]\n" + "".join(f"{k} = {value(v)}\n" for k, v in c.items())
                   for c in callers)


def has_default_org(data_dir):
    """Whether `callers` of organisation `default` can be seeded: a fresh data directory gets it
    at the first start; one set up with `vesalius admin` may not have it (the server would refuse
    to start with callers of an unknown organisation)."""
    db = Path(data_dir) / "index.db"
    if not db.exists():
        return True
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute("SELECT 1 FROM orgs WHERE id = 'default'").fetchone() is not None
    except sqlite3.Error:
        return True
    finally:
        con.close()


class Server:
    """A running `vesalius serve` process."""

    def __init__(self, data_dir: Path, extra_env=None, wrapper=None, config_text=None, extra_args=None,
                 callers=None):
        self.data_dir = data_dir
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        env = dict(os.environ)
        env["VESALIUS__LIMITS__MIN_FREE_BYTES"] = env.get("VESALIUS__LIMITS__MIN_FREE_BYTES", "0")
        env["RUST_LOG"] = env.get("RUST_LOG", "info")
        # The suites below predate HTTP authentication and carry no credentials: they run with
        # auth.required = false (test_http_auth.py checks the default, required).
        env["VESALIUS__AUTH__REQUIRED"] = env.get("VESALIUS__AUTH__REQUIRED", "false")
        if extra_env:
            env.update(extra_env)
        cmd = [BIN]
        # Issue 4: DICOM callers must be registered; seed the ones the tests use (`callers`
        # replaces the default list) with whatever configuration the test gives.
        callers = DEFAULT_CALLERS if callers is None else callers
        if not has_default_org(data_dir):
            callers = [c for c in callers if c["org"] != "default"]
        cfg = data_dir.parent / f"{data_dir.name}.toml"
        cfg.write_text((config_text or "") + callers_toml(callers))
        cmd += ["--config", str(cfg)]
        cmd += ["serve", "--data-dir", str(data_dir), "--dicom-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"]
        # TLS: e.g. ["--tls-cert", cert, "--tls-key", key, "--dicom-tls-addr", "127.0.0.1:0"].
        cmd += [str(a) for a in (extra_args or [])]
        if wrapper:
            cmd = wrapper + cmd
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, env=env, text=True)
        self.dicom_port = None
        self.http_port = None
        self.dicom_tls_port = None  # printed before the HTTP lines when DICOM TLS runs
        self.scheme = "http"
        deadline = time.time() + 60
        while time.time() < deadline and (self.dicom_port is None or self.http_port is None):
            line = self.proc.stdout.readline()
            if not line:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
                continue
            m = re.search(r"DICOM\s+:\s+127\.0\.0\.1:(\d+)", line)
            if m:
                self.dicom_port = int(m.group(1))
            m = re.search(r"DICOM TLS\s+:\s+127\.0\.0\.1:(\d+)", line)
            if m:
                self.dicom_tls_port = int(m.group(1))
            m = re.search(r"DICOMweb\s+:\s+(https?)://127\.0\.0\.1:(\d+)", line)
            if m:
                self.scheme = m.group(1)
                self.http_port = int(m.group(2))
        if self.dicom_port is None or self.http_port is None:
            self.kill()
            raise RuntimeError("server did not report its ports")

    @property
    def base(self):
        return f"{self.scheme}://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self):
        return f"{self.base}/dicom-web"

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    def stop(self, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path / "data")
    yield s
    s.kill()


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    """A small synthetic set: 24-slice CT, MR, multi-frame, RLE and charset studies."""
    out = tmp_path_factory.mktemp("synth")
    subprocess.run([BIN, "synth", "--out", str(out), "--seed", "7", "--slices", "24"], check=True)
    return out


def dcm_files(root):
    return sorted(p for p in Path(root).rglob("*.dcm"))


def dcmtk(tool):
    path = shutil.which(tool, path="/usr/bin")
    if path is None:
        pytest.skip(f"DCMTK {tool} not installed")
    return path


def rejection_note(target, out, patient_id="NOTE-1"):
    """Writes to `out` an IHE IOCM rejection note built with pydicom: a Key Object Selection
    titled (113001, DCM, "Rejected for Quality Reasons") in a study of its own, naming the
    instance in the file `target` (PS3.3 A.35.4, IHE RAD TF-3 IOCM). Answers the note's
    dataset."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    t = pydicom.dcmread(target, stop_before_pixels=True)
    ko_class = "1.2.840.10008.5.1.4.1.1.88.59"
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = ko_class, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientID, ds.PatientName = "KO", patient_id, "Rejection^Note"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "113001", "DCM", "Rejected for Quality Reasons"
    ds.ConceptNameCodeSequence = Sequence([code])
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = t.SOPClassUID, t.SOPInstanceUID
    series = Dataset()
    series.SeriesInstanceUID, series.ReferencedSOPSequence = t.SeriesInstanceUID, Sequence([ref])
    study = Dataset()
    study.StudyInstanceUID, study.ReferencedSeriesSequence = t.StudyInstanceUID, Sequence([series])
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence([study])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ko_class, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.save_as(out, enforce_file_format=True)
    return ds
