"""Round trips over every transfer syntax with files of varied origin: pydicom's bundled vendor
test files, our synthetic studies, and compressed variants made with DCMTK and GDCM tools.

Each object goes in by C-STORE (DCMTK storescu, proposing the file's own transfer syntax) or by
STOW-RS (dicomweb-client), and comes back by WADO-RS (`transfer-syntax=*`) and C-GET (DCMTK getscu).
What comes back must be the data set that was sent, byte for byte (only the file meta group may
differ)."""

import os
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file

from conftest import dcm_files, dcmtk

ENV = dict(os.environ, TCP_NODELAY="1")

# pydicom's bundled files (no download): (name, expected transfer syntax) of varied vendors.
PYDICOM_FILES = [
    "CT_small.dcm",                # Explicit VR LE, GE-style CT
    "MR_small.dcm",                # Explicit VR LE
    "MR_small_implicit.dcm",       # Implicit VR LE
    "MR_small_bigendian.dcm",      # Explicit VR BE (retired)
    "MR_small_RLE.dcm",            # RLE Lossless
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
    "JPEG2000.dcm",                # JPEG 2000
    "SC_rgb_jpeg_dcmtk.dcm",       # JPEG baseline, RGB
    "JPEG-LL.dcm",                 # JPEG lossless SV1
    "image_dfl.dcm",               # Deflated Explicit VR LE
    "emri_small.dcm",              # multi-frame MR
    "rtplan.dcm",                  # non-image (RT Plan)
]


def dataset_bytes(path):
    """The data set bytes of a Part 10 file (everything after the meta group)."""
    raw = Path(path).read_bytes()
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    # Meta group length tells where the data set starts (PS3.10 7.1).
    meta_len = ds.file_meta.get("FileMetaInformationGroupLength").value
    return raw[132 + 12 + meta_len:]


def fixtures(tmp_dir, synth_dir):
    out = []
    for name in PYDICOM_FILES:
        try:
            p = get_testdata_file(name)
        except Exception:
            p = None
        if p:
            out.append(Path(p))
    ct = [f for f in dcm_files(synth_dir) if "ct-head" in str(f) and "prior" not in str(f)][0]
    mr = [f for f in dcm_files(synth_dir) if "mr-brain" in str(f)][0]
    out += [ct, mr]
    out += [f for f in dcm_files(synth_dir) if "us-carotid" in str(f)][:1]
    out += [f for f in dcm_files(synth_dir) if "ct-head-prior" in str(f)][:1]  # our RLE
    out += [f for f in dcm_files(synth_dir) if "/sc" in str(f) or "_sc" in str(f)]  # charsets
    tools = [
        ("dcmcjpeg", ["+e1"], "jpeg-lossless"),      # JPEG lossless SV1
        ("dcmcjpeg", ["+eb"], "jpeg-baseline"),       # lossy baseline (8-bit only: MR may fail)
        ("dcmcjpls", [], "jpeg-ls"),
        ("dcmcrle", [], "rle"),
    ]
    for tool, args, tag in tools:
        exe = shutil.which(tool, path="/usr/bin")
        if not exe:
            continue
        for src in (ct, mr):
            dst = Path(tmp_dir) / f"{src.stem}-{src.parent.name}-{tag}.dcm"
            r = subprocess.run([exe, *args, str(src), str(dst)], capture_output=True)
            if r.returncode == 0:
                out.append(dst)
    gdcm = shutil.which("gdcmconv")
    if gdcm:
        for src in (ct, mr):
            for flag, tag in (("--j2k", "j2k"), ("--jpegls", "gdcm-jpegls")):
                dst = Path(tmp_dir) / f"{src.stem}-{src.parent.name}-{tag}.dcm"
                if subprocess.run([gdcm, flag, str(src), str(dst)], capture_output=True).returncode == 0:
                    out.append(dst)
    return out


def test_stow_then_wado_returns_the_same_bytes(server, synth_dir, tmp_path):
    from dicomweb_client.api import DICOMwebClient

    files = fixtures(tmp_path, synth_dir)
    syntaxes = {str(pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID) for f in files}
    assert len(syntaxes) >= 8, f"too few transfer syntaxes covered: {syntaxes}"
    client = DICOMwebClient(url=server.dicomweb)
    for f in files:
        ds = pydicom.dcmread(f)
        client.store_instances([ds])
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        url = (f"{server.dicomweb}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
               f"/instances/{ds.SOPInstanceUID}")
        r = requests.get(url, headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
        assert r.status_code == 200, f"{f.name}: {r.status_code}"
        got = pydicom.dcmread(pydicom.filebase.DicomBytesIO(_first_part(r)))
        sent = pydicom.dcmread(f)
        assert got.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID, f.name
        # pydicom re-encodes what dicomweb-client sends, so compare decoded data sets and the
        # raw pixel bytes (both exactly as sent).
        assert got == sent, f.name
        if "PixelData" in sent:
            assert got.PixelData == sent.PixelData, f.name
        # metadata (precomputed at ingest) answers for every syntax
        meta = client.retrieve_instance_metadata(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        assert meta["00080018"]["Value"][0] == ds.SOPInstanceUID


def _first_part(r):
    boundary = r.headers["Content-Type"].split("boundary=")[1].split(";")[0].strip('"')
    part = r.content.split(b"--" + boundary.encode())[1]
    return part.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0]


def test_storescu_then_getscu_returns_the_same_data_set(server, synth_dir, tmp_path):
    storescu, getscu = dcmtk("storescu"), dcmtk("getscu")
    (tmp_path / "fx").mkdir()
    files = fixtures(tmp_path / "fx", synth_dir)
    sent = 0
    for f in files:
        ts = str(pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        # Propose the file's own syntax: storescu -xs ... is per-kind; "+R" (read as is, no
        # conversion) with the file's TS proposed via a config-free flag set.
        # storescu proposes one compressed syntax per option (DCMTK 3.6.7 has no JPEG
        # Process 14 non-SV1 option: those files go in by STOW in the test above).
        flags = {
            "1.2.840.10008.1.2": ["-xi"],
            "1.2.840.10008.1.2.1": ["-xe"],
            "1.2.840.10008.1.2.2": ["-xb"],
            "1.2.840.10008.1.2.1.99": ["-xd"],
            "1.2.840.10008.1.2.4.50": ["-xy"],
            "1.2.840.10008.1.2.4.51": ["-xx"],
            "1.2.840.10008.1.2.4.70": ["-xs"],
            "1.2.840.10008.1.2.4.80": ["-xt"],
            "1.2.840.10008.1.2.4.81": ["-xu"],
            "1.2.840.10008.1.2.4.90": ["-xv"],
            "1.2.840.10008.1.2.4.91": ["-xw"],
            "1.2.840.10008.1.2.5": ["-xr"],
        }.get(ts)
        if flags is None:
            continue
        r = subprocess.run([storescu, "-aec", "VESALIUS", *flags, "127.0.0.1", str(server.dicom_port), str(f)],
                           capture_output=True, text=True, env=ENV)
        assert r.returncode == 0, f"{f.name}: {r.stderr}"
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        out = tmp_path / "got" / f.name
        out.mkdir(parents=True)
        r = subprocess.run([getscu, "-aec", "VESALIUS", "-S", "-k", "QueryRetrieveLevel=IMAGE",
                            "-k", f"StudyInstanceUID={ds.StudyInstanceUID}",
                            "-k", f"SeriesInstanceUID={ds.SeriesInstanceUID}",
                            "-k", f"SOPInstanceUID={ds.SOPInstanceUID}",
                            "+xa", "-od", str(out), "127.0.0.1", str(server.dicom_port)],
                           capture_output=True, text=True, env=ENV)
        got = list(out.iterdir())
        assert len(got) == 1, f"{f.name}: getscu retrieved {len(got)}: {r.stderr}"
        assert dataset_bytes(got[0]) == dataset_bytes(f), f"{f.name}: data set differs"
        sent += 1
    assert sent >= 10
