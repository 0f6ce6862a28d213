"""The durability contract, checked from outside the process.

1. A kill -9 mid-ingest with several concurrent senders: after restart, every instance whose
   C-STORE was acknowledged (status 0x0000) is retrievable with an identical data set, and no
   half-written object is visible (the index and the blobs agree: `admin check`).
2. The syncs really happen, in order (a kill -9 cannot see a missing fsync because the page cache
   survives, so this is checked with strace):
   - with the ingest journal (the default, vesalius_store::journal): the journal file was
     created and its directory fsync'd before it was filled; it is sealed (its extended
     attribute) and fsync'd before the C-STORE response and before it is linked to its final
     key; afterwards the checkpoint fsyncs the final directory and then the SQLite WAL, and only
     then removes the journal file (its redo record);
   - without it (`[storage] journal = false`): the spool file is fsync'd before it is linked to
     its final key, the final directory is fsync'd, the SQLite WAL is synced, and only then is
     the C-STORE response written to the socket.
3. The journal's redo at start-up is tested in Rust (crates/vesalius/src/journal_tests.rs),
   where what a crash may lose (unsynced index rows and directory entries) can be taken away.
"""

import json
import re
import shutil
import subprocess
import threading
import time

import pydicom
import pytest
import requests
from pynetdicom import AE, StoragePresentationContexts

from conftest import BIN, Server, dcm_files


def sent_bytes(ds, ts):
    """The data set bytes pynetdicom puts on the wire for `ds` in the negotiated syntax `ts`."""
    from pynetdicom.dsutils import encode

    return encode(ds, ts.is_implicit_VR, ts.is_little_endian)


def stored_bytes(part10):
    """The data set bytes of a Part 10 object (everything after the file meta group)."""
    meta_len = int.from_bytes(part10[140:144], "little")
    return part10[144 + meta_len:]


def send_all(port, files, acked, errors, stop):
    ae = AE(ae_title="CRASHTEST")
    ae.requested_contexts = StoragePresentationContexts[:100]
    assoc = ae.associate("127.0.0.1", port, ae_title="VESALIUS")
    if not assoc.is_established:
        errors.append("association failed")
        return
    try:
        for f in files:
            if stop.is_set():
                break
            ds = pydicom.dcmread(f)
            try:
                st = assoc.send_c_store(ds)
            except Exception as e:  # the server died under us
                errors.append(str(e))
                break
            if st and getattr(st, "Status", None) == 0x0000:
                acked.append(f)
            elif not st:
                break
    finally:
        try:
            assoc.release()
        except Exception:
            pass


def test_kill_9_mid_ingest_loses_no_acknowledged_instance(tmp_path, synth_dir):
    files = [f for f in dcm_files(synth_dir) if "ct-head" in str(f) and "prior" not in str(f)]
    assert len(files) >= 20
    data = tmp_path / "data"
    srv = Server(data)
    acked, errors, stop = [], [], threading.Event()
    chunks = [files[i::4] for i in range(4)]
    threads = [threading.Thread(target=send_all, args=(srv.dicom_port, c, acked, errors, stop)) for c in chunks]
    for t in threads:
        t.start()
    # Kill once a part (not all) has been acknowledged.
    deadline = time.time() + 60
    while len(acked) < len(files) // 3 and time.time() < deadline:
        time.sleep(0.005)
    srv.kill()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert 0 < len(acked) < len(files), f"kill did not land mid-ingest ({len(acked)}/{len(files)})"

    srv2 = Server(data)
    try:
        for f in acked:
            ds = pydicom.dcmread(f)
            url = (
                f"{srv2.dicomweb}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                f"/instances/{ds.SOPInstanceUID}"
            )
            r = requests.get(url, headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
            assert r.status_code == 200, f"acknowledged instance {ds.SOPInstanceUID} missing after crash"
            boundary = r.headers["Content-Type"].split("boundary=")[1].split(";")[0].strip('"')
            part = r.content.split(b"--" + boundary.encode())[1]
            body = part.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0]
            ts = pydicom.dcmread(pydicom.filebase.DicomBytesIO(body), stop_before_pixels=True).file_meta.TransferSyntaxUID
            assert stored_bytes(body) == sent_bytes(ds, ts), f"{ds.SOPInstanceUID} differs"
    finally:
        srv2.stop()
    # No half-written object visible: every index row has its intact blob.
    out = subprocess.run(
        [BIN, "admin", "check", "--data-dir", str(data), "--json"], capture_output=True, text=True,
        env={"VESALIUS__LIMITS__MIN_FREE_BYTES": "0", "VESALIUS__AUTH__REQUIRED": "false",
             "PATH": "/usr/bin:/bin"},
    )
    report = json.loads(out.stdout)
    assert out.returncode == 0, out.stdout + out.stderr
    assert report["missing"] == [] and report["damaged"] == []
    assert report["ok"] >= len(acked)


def store_one_traced(tmp_path, synth_dir, extra_env, syscalls):
    """One C-STORE into a server under strace; the trace lines and the data set sent."""
    trace = tmp_path / "strace.log"
    f = [f for f in dcm_files(synth_dir) if "ct-head" in str(f)][0]
    srv = Server(
        tmp_path / "data",
        extra_env=extra_env,
        wrapper=["strace", "-f", "-y", "-qq", "-e", "trace=" + syscalls, "-o", str(trace)],
    )
    try:
        ds = pydicom.dcmread(f)
        ae = AE(ae_title="SYNCTEST")
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title="VESALIUS")
        assert assoc.is_established
        st = assoc.send_c_store(ds)
        assert st.Status == 0x0000
        assoc.release()
    finally:
        srv.stop()  # graceful: the journal's last checkpoint runs before the process exits
    return trace.read_text().splitlines(), ds


def finder(lines):
    def first(pred, after=-1):
        for i, line in enumerate(lines):
            if i > after and pred(line):
                return i
        return None
    return first


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace not installed")
def test_syncs_happen_before_the_acknowledgement_without_the_journal(tmp_path, synth_dir):
    lines, ds = store_one_traced(tmp_path, synth_dir, {"VESALIUS__STORAGE__JOURNAL": "false"},
                                 "fsync,fdatasync,linkat,link,renameat2,rename,sendto,write")
    first = finder(lines)
    sop = ds.SOPInstanceUID
    spool_sync = first(lambda l: re.search(r"fsync\(\d+<[^>]*/\.spool/[^>]*>", l) is not None)
    link = first(lambda l: "link" in l and sop in l and ".spool" in l, spool_sync if spool_sync is not None else -1)
    series = re.escape(ds.SeriesInstanceUID)
    dir_sync = first(lambda l: re.search(rf"fsync\(\d+<[^>]*/{series}>", l) is not None, link or -1)
    wal_sync = first(lambda l: re.search(r"(fsync|fdatasync)\(\d+<[^>]*index\.db-wal>", l) is not None, dir_sync or -1)
    # The C-STORE-RSP: a write/sendto on the DICOM socket after the WAL sync.
    ack = first(lambda l: re.search(r"(write|sendto)\(\d+<(TCP|socket)", l) is not None, wal_sync or -1)
    assert spool_sync is not None, "spool file never fsync'd"
    assert link is not None and link > spool_sync, "blob published before its data was synced"
    assert dir_sync is not None, "final directory never fsync'd"
    assert wal_sync is not None and wal_sync > dir_sync, "index committed before the blob was durable"
    assert ack is not None and ack > wal_sync, "acknowledged before the index commit was durable"


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace not installed")
def test_journal_seals_and_syncs_before_the_acknowledgement_and_checkpoints_after(tmp_path, synth_dir):
    lines, ds = store_one_traced(
        tmp_path, synth_dir, {},
        "openat,fsync,fdatasync,fsetxattr,linkat,link,unlink,unlinkat,sendto,write")
    first = finder(lines)
    sop = re.escape(ds.SOPInstanceUID)
    series = re.escape(ds.SeriesInstanceUID)
    # The link of the journal file to the final key names both.
    link = first(lambda l: re.search(rf"link(at)?\(.*\.spool/([0-9a-f-]+)\.journal.*{sop}", l) is not None)
    assert link is not None, "instance never linked from a journal file"
    name = re.search(r"\.spool/([0-9a-f-]+)\.journal", lines[link]).group(1)
    journal_fd = rf"\d+<[^>]*/\.spool/{name}\.journal>"
    created = first(lambda l: "openat(" in l and f"{name}.journal" in l and "O_CREAT" in l)
    spool_dir_sync = first(lambda l: re.search(r"fsync\(\d+<[^>]*/\.spool>", l) is not None, created or -1)
    opened = first(lambda l: "openat(" in l and f"{name}.journal" in l and "O_CREAT" not in l, created or -1)
    sealed = first(lambda l: re.search(rf"fsetxattr\({journal_fd}, \"user\.vesalius\.journal\"", l) is not None)
    # (strace shows a call another thread interrupts as "fsync(fd <unfinished ...>".)
    synced = first(lambda l: re.search(rf"(fsync|fdatasync)\({journal_fd}(\)| <unfinished)", l) is not None,
                   sealed or -1)
    ack = first(lambda l: re.search(r"(write|sendto)\(\d+<(TCP|socket)", l) is not None, synced or -1)
    dir_sync = first(lambda l: re.search(rf"fsync\(\d+<[^>]*/{series}>", l) is not None, link)
    wal_sync = first(lambda l: re.search(r"(fsync|fdatasync)\(\d+<[^>]*index\.db-wal>", l) is not None,
                     dir_sync if dir_sync is not None else link)
    removed = first(lambda l: re.search(rf"unlink(at)?\(.*{name}\.journal", l) is not None, link)
    assert created is not None, "journal file never created"
    assert spool_dir_sync is not None and opened is not None and spool_dir_sync < opened, \
        "journal file filled before its directory entry was durable"
    assert sealed is not None and opened < sealed, "journal file never sealed"
    assert synced is not None, "sealed journal file never fsync'd"
    assert link > synced, "blob published before its journal file was synced"
    assert ack is not None, "no C-STORE response after the journal sync"
    # The acknowledgement does not wait for the final directory's sync (other threads' syncs,
    # such as an audit batch's commit, may interleave in the trace, so only this one is checked):
    assert dir_sync is None or dir_sync > ack, "the final directory was synced before the ack"
    assert dir_sync is not None, "final directory never fsync'd by a checkpoint"
    assert wal_sync is not None, "WAL never fsync'd after the unsynced commit"
    assert removed is not None and removed > wal_sync > dir_sync, \
        "journal file removed before its checkpoint made the blob entry and the index durable"
