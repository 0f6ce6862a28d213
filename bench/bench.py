#!/usr/bin/env python3
"""Vesalius against Orthanc on the same machine, in the same run (see docs/benchmarks.md).

Run through `scripts/bench`, which installs what is needed and builds the release binary.
Every stage starts each server on a fresh data directory; the figures are medians over
BENCH_ROUNDS rounds where the stage is repeated, servers alternating within a round.

Knobs (environment):
  BENCH_SLICES=300        CT slices (512x512, ~525 KB per file)
  BENCH_ROUNDS=5          rounds of every ingest stage (median reported)
  BENCH_WADO_N=3          whole-study WADO-RS retrievals (median)
  BENCH_META_N=10         study /metadata requests (median, after one warm-up)
  BENCH_QIDO_N=300        QIDO requests per server (and on the 1M-row index)
  BENCH_PDU=65536         max PDU length of both servers
  BENCH_BIG=1             fill the Vesalius index with ~1M instance rows and measure QIDO (0: skip)
  BENCH_BIG_ANALYZE=1     then run ANALYZE on that index and measure again (diagnostic)
  BENCH_BIG_PATIENTS=20000 BENCH_BIG_STUDIES=50000 BENCH_BIG_SERIES=3 BENCH_BIG_INSTANCES=7
  BENCH_BOUNDS_REPS=5     repetitions of each raw-disk measurement (median; one before each
                          ingest round, the rest after the last round)
  BENCH_ONLY=             "vesalius" or "orthanc" to run one side only (then no ratios)
  BENCH_PERF=0            1: `perf record` Vesalius in untimed extra C-STORE/STOW passes and
                          during the 1M QIDO (flat profiles in the work directory)
  BENCH_WORKDIR=          where data directories live (default: a fresh dir under /var/tmp)
  BENCH_KEEP=0            1: keep the work directory
  BENCH_DOC=1             append the results to docs/benchmarks.md (0: print only)
  BENCH_DOC_PATH=         append to this file instead
  VESALIUS_BIN=           the binary (default target/release/vesalius)
"""

import ctypes
import datetime
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


def env_int(name, default):
    return int(os.environ.get(name, default))


SLICES = env_int("BENCH_SLICES", 300)
ROUNDS = env_int("BENCH_ROUNDS", 5)
WADO_N = env_int("BENCH_WADO_N", 3)
META_N = env_int("BENCH_META_N", 10)
QIDO_N = env_int("BENCH_QIDO_N", 300)
PDU = env_int("BENCH_PDU", 65536)
BIG = env_int("BENCH_BIG", 1)
BIG_ANALYZE = env_int("BENCH_BIG_ANALYZE", 1)
BIG_PATIENTS = env_int("BENCH_BIG_PATIENTS", 20000)
BIG_STUDIES = env_int("BENCH_BIG_STUDIES", 50000)
BIG_SERIES = env_int("BENCH_BIG_SERIES", 3)
BIG_INSTANCES = env_int("BENCH_BIG_INSTANCES", 7)
BOUNDS_REPS = env_int("BENCH_BOUNDS_REPS", ROUNDS)
ONLY = os.environ.get("BENCH_ONLY", "").strip().lower()
PERF = env_int("BENCH_PERF", 0)
KEEP = env_int("BENCH_KEEP", 0)
DOC = env_int("BENCH_DOC", 1)
VESALIUS_BIN = os.environ.get("VESALIUS_BIN", str(ROOT / "target/release/vesalius"))
ORTHANC_BIN = "/usr/sbin/Orthanc"
STORESCU = "/usr/bin/storescu"  # never the pynetdicom shim of the same name in .venv
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
WADO_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'

SIDES = [s for s in ("vesalius", "orthanc") if not ONLY or ONLY == s]

_procs = []  # every server process we started, killed on exit


def register(proc):
    """Remembers a server we started (and tells scripts/bench, which kills leftovers on exit)."""
    _procs.append(proc)
    pidfile = os.environ.get("BENCH_PIDFILE")
    if pidfile:
        with open(pidfile, "a") as f:
            f.write(f"{proc.pid}\n")


def log(msg):
    print(msg, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def percentile(xs, p):
    """Nearest-rank percentile."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def vm_hwm_kb(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid):
    """User + system CPU time of a process so far (its threads included)."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def wait_http(url, deadline, proc, log_path, ok=(200,)):
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited (rc {proc.returncode}):\n{Path(log_path).read_text()[-3000:]}")
        try:
            if requests.get(url, timeout=2).status_code in ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready; log:\n{Path(log_path).read_text()[-3000:]}")


# --------------------------------------------------------------------------------------------
# Servers


class Server:
    name = "?"
    proc = None
    hwm_kb = 0

    def stop(self):
        """Stops the server (SIGTERM, then SIGKILL) and returns its peak RSS in kB."""
        if self.proc is None:
            return 0
        self.hwm_kb = max(self.hwm_kb, vm_hwm_kb(self.proc.pid))
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc in _procs:
            _procs.remove(self.proc)
        self.proc = None
        return self.hwm_kb

    @property
    def pid(self):
        return self.proc.pid


class Vesalius(Server):
    name = "vesalius"
    ae = "VESALIUS"

    def __init__(self, data_dir):
        self.data_dir = Path(data_dir)
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"

    def start(self):
        env = dict(os.environ)
        env["VESALIUS__LIMITS__MIN_FREE_BYTES"] = "0"
        env["VESALIUS__DICOM__MAX_PDU_LENGTH"] = str(PDU)
        # The harness measures the archive, not credentials (auth is checked by scripts/test).
        env["VESALIUS__AUTH__REQUIRED"] = "false"
        # DCMTK's storescu calls as STORESCU: an allowed caller of the default organisation.
        env["VESALIUS__DICOM__CALLERS"] = '[{ae_title="STORESCU", org="default"}]'
        env.setdefault("RUST_LOG", "info")
        env["TCP_NODELAY"] = "1"
        cmd = [VESALIUS_BIN, "serve", "--data-dir", str(self.data_dir),
               "--dicom-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"]
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        logf = open(self.log_path, "a")
        self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env,
                                     stdin=subprocess.DEVNULL)
        logf.close()
        register(self.proc)
        self.hwm_kb = 0
        self.dicom_port = self.http_port = None
        deadline = time.time() + 120
        while time.time() < deadline and (self.dicom_port is None or self.http_port is None):
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
            m = re.findall(r"DICOM\s+:\s+127\.0\.0\.1:(\d+)", text)
            if m:
                self.dicom_port = int(m[-1])
            m = re.findall(r"DICOMweb\s+:\s+http://127\.0\.0\.1:(\d+)", text)
            if m:
                self.http_port = int(m[-1])
            if self.proc.poll() is not None:
                raise RuntimeError(f"vesalius exited:\n{text[-3000:]}")
            time.sleep(0.05)
        if self.dicom_port is None or self.http_port is None:
            raise RuntimeError("vesalius did not report its ports")
        self.base = f"http://127.0.0.1:{self.http_port}"
        self.dicomweb = f"{self.base}/dicom-web"
        # /healthz, not /readyz: /readyz runs a full-table aggregate of the index on every
        # probe (see docs/benchmarks.md), which at 1M rows takes seconds.
        wait_http(f"{self.base}/healthz", time.time() + 120, self.proc, self.log_path)
        return self

    def count_instances(self, study_uid):
        r = requests.get(f"{self.dicomweb}/studies", params={"StudyInstanceUID": study_uid},
                         headers={"Accept": "application/dicom+json"}, timeout=60)
        if r.status_code == 204 or not r.content:
            return 0
        r.raise_for_status()
        rows = r.json()
        if not rows:
            return 0
        return int(rows[0].get("00201208", {}).get("Value", [0])[0])


class Orthanc(Server):
    name = "orthanc"
    ae = "ORTHANC"

    def __init__(self, data_dir):
        self.data_dir = Path(data_dir)
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"

    def start(self):
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.http_port, self.dicom_port = free_port(), free_port()
        while self.dicom_port == self.http_port:
            self.dicom_port = free_port()
        cfg = {
            "Name": "BENCH",
            "StorageDirectory": str(self.data_dir / "storage"),
            "IndexDirectory": str(self.data_dir / "index"),  # default SQLite index
            "Plugins": [DICOMWEB_PLUGIN],
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.ae,
            "RemoteAccessAllowed": True,
            "AuthenticationEnabled": False,
            "SyncStorageArea": True,
            "MaximumPduLength": PDU,
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        cfg.update(getattr(self, "extra_config", {}))  # e.g. peers and Lua (bench/exchange.py)
        cfg_path = self.data_dir / "orthanc.json"
        cfg_path.write_text(json.dumps(cfg, indent=2))
        env = dict(os.environ)
        env["TCP_NODELAY"] = "1"
        logf = open(self.log_path, "a")
        self.proc = subprocess.Popen([ORTHANC_BIN, str(cfg_path)], stdout=logf,
                                     stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL)
        logf.close()
        register(self.proc)
        self.hwm_kb = 0
        self.base = f"http://127.0.0.1:{self.http_port}"
        self.dicomweb = f"{self.base}/dicom-web"
        wait_http(f"{self.base}/system", time.time() + 60, self.proc, self.log_path)
        # The DICOM listener comes up with the HTTP one, but check it anyway.
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.dicom_port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        return self

    def count_instances(self, study_uid):
        r = requests.get(f"{self.base}/statistics", timeout=60)
        r.raise_for_status()
        return int(r.json()["CountInstances"])


def make_server(side, data_dir):
    return Vesalius(data_dir) if side == "vesalius" else Orthanc(data_dir)


# --------------------------------------------------------------------------------------------
# Profiling (optional)


class Perf:
    def __init__(self, pid, out):
        self.out = out
        self.proc = None
        if PERF and shutil.which("perf"):
            self.proc = subprocess.Popen(
                ["perf", "record", "-F", "999", "-g", "-p", str(pid), "-o", str(out)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.3)

    def finish(self):
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait()
        txt = Path(str(self.out) + ".txt")
        with open(txt, "w") as f:
            subprocess.run(["perf", "report", "-i", str(self.out), "--stdio", "--no-children",
                            "--sort", "symbol", "--percent-limit", "0.7"],
                           stdout=f, stderr=subprocess.DEVNULL)
        log(f"    perf profile: {txt}")
        return txt


# --------------------------------------------------------------------------------------------
# Data


def synthesize(out):
    if Path(VESALIUS_BIN).exists():
        subprocess.run([VESALIUS_BIN, "synth", "--out", str(out), "--seed", "1",
                        "--slices", str(SLICES), "--kinds", "ct-head"], check=True,
                       stdout=subprocess.DEVNULL)
    else:  # Orthanc-only runs while the binary does not build: the generator's example.
        ex = ROOT / "target/release/examples/synth"
        if not ex.exists():
            subprocess.run(["cargo", "build", "--release", "-q", "-p", "vesalius-synth",
                            "--example", "synth"], check=True, cwd=ROOT)
        tmp = Path(str(out) + ".all")
        subprocess.run([str(ex), str(tmp), "1", str(SLICES), "1"], check=True,
                       stdout=subprocess.DEVNULL)
        ct = next(p for p in tmp.glob("*/*") if p.name.endswith("_ct-head"))
        (out / ct.parent.name).mkdir(parents=True)
        ct.rename(out / ct.parent.name / ct.name)
        shutil.rmtree(tmp)
    files = sorted(p for p in out.rglob("*.dcm"))
    if len(files) != SLICES:
        raise RuntimeError(f"expected {SLICES} files, found {len(files)}")
    return files


def study_keys(path):
    import pydicom
    ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    return {
        "study_uid": str(ds.StudyInstanceUID),
        "patient_id": str(ds.PatientID),
        "patient_name": str(ds.PatientName),
        "study_date": str(ds.StudyDate),
        "accession": str(ds.AccessionNumber),
        "modality": str(ds.Modality),
    }


def build_stow_body(files, path):
    boundary = "vesalius-bench-" + uuid.uuid4().hex
    with open(path, "wb") as out:
        for f in files:
            out.write(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
            out.write(Path(f).read_bytes())
            out.write(b"\r\n")
        out.write(f"--{boundary}--\r\n".encode())
    return f'multipart/related; type="application/dicom"; boundary={boundary}'


# --------------------------------------------------------------------------------------------
# Raw disk bounds


_libc = ctypes.CDLL(None, use_errno=True)


BOUND_MODES = ("serial", "serial_dir", "batch_fsync", "batch_syncfs")


def disk_bounds(root, n, res, rep):
    """Files/s for 512 KB files, appended to `res`: write+fsync one at a time; batched (write N,
    then fsync them all, or syncfs once); one at a time with the parent directory fsync'd too."""
    buf = os.urandom(512 * 1024)
    # Untimed warm-up: the first pass after other I/O is consistently slower.
    w = Path(root) / f"warmup-{rep}"
    w.mkdir(parents=True)
    for i in range(min(n, 100)):
        fd = os.open(w / f"{i:05}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, buf)
        os.fsync(fd)
        os.close(fd)
    shutil.rmtree(w)
    os.sync()
    time.sleep(0.5)
    if True:
        for mode in res:
            d = Path(root) / f"{mode}-{rep}" / "a" / "b"
            d.mkdir(parents=True)
            os.sync()
            t0 = time.perf_counter()
            if mode in ("serial", "serial_dir"):
                dfd = os.open(d, os.O_RDONLY) if mode == "serial_dir" else None
                for i in range(n):
                    fd = os.open(d / f"{i:05}.dcm", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                    os.write(fd, buf)
                    os.fsync(fd)
                    os.close(fd)
                    if dfd is not None:
                        os.fsync(dfd)
                if dfd is not None:
                    os.close(dfd)
            elif mode == "batch_fsync":
                names = []
                for i in range(n):
                    p = d / f"{i:05}.dcm"
                    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                    os.write(fd, buf)
                    os.close(fd)
                    names.append(p)
                for p in names:
                    fd = os.open(p, os.O_RDONLY)
                    os.fsync(fd)
                    os.close(fd)
                dfd = os.open(d, os.O_RDONLY)
                os.fsync(dfd)
                os.close(dfd)
            else:
                for i in range(n):
                    fd = os.open(d / f"{i:05}.dcm", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                    os.write(fd, buf)
                    os.close(fd)
                dfd = os.open(d, os.O_RDONLY)
                if _libc.syncfs(dfd) != 0:
                    os.sync()
                os.close(dfd)
            res[mode].append(n / (time.perf_counter() - t0))
            shutil.rmtree(Path(root) / f"{mode}-{rep}")
    os.sync()


def summarize_bounds(res):
    out = {k: median(v) for k, v in res.items()}
    out["samples"] = res
    out["batched"] = max(out["batch_fsync"], out["batch_syncfs"])
    return out


# --------------------------------------------------------------------------------------------
# Stages


def storescu(server, files, assocs, ct_dir):
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    if assocs == 1:
        cmds = [[STORESCU, "-aec", server.ae, "+sd", "+r", "127.0.0.1", str(server.dicom_port),
                 str(ct_dir)]]
    else:
        q = (len(files) + assocs - 1) // assocs
        cmds = [[STORESCU, "-aec", server.ae, "127.0.0.1", str(server.dicom_port)]
                + [str(f) for f in files[i * q:(i + 1) * q]] for i in range(assocs) if files[i * q:(i + 1) * q]]
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for c in cmds]
    outs = [p.communicate()[0] for p in procs]
    dt = time.perf_counter() - t0
    for p, o in zip(procs, outs):
        if p.returncode != 0 or re.search(r"^[EF]:", o, re.M):
            raise RuntimeError(f"storescu to {server.name} failed (rc {p.returncode}):\n{o[-2000:]}")
    return dt


def count_syncs(server, action, out):
    """Runs `action` with strace attached to the server; returns the number of durable syncs
    (fsync, fdatasync, syncfs, msync) and of sync_file_range calls (writeback hints, not durable)
    it made, all threads, or None without strace."""
    if not shutil.which("strace"):
        return None
    err_path = Path(str(out) + ".stderr")
    with open(err_path, "w") as err:
        st = subprocess.Popen(["strace", "-f", "-c", "-o", str(out), "-e",
                               "trace=fsync,fdatasync,sync_file_range,syncfs,msync", "-p", str(server.pid)],
                              stdout=subprocess.DEVNULL, stderr=err)
    # Wait until strace reports it is attached to every thread.
    deadline = time.time() + 10
    while time.time() < deadline and "attached" not in err_path.read_text():
        time.sleep(0.05)
    time.sleep(0.2)
    try:
        action()
    finally:
        time.sleep(0.3)
        st.send_signal(signal.SIGINT)
        st.wait()
    n = sfr = 0
    text = Path(out).read_text() if Path(out).exists() else ""
    for line in text.splitlines():
        f = line.split()
        if f and f[-1] in ("fsync", "fdatasync", "syncfs", "msync"):
            n += int(f[3])
        elif f and f[-1] == "sync_file_range":
            sfr += int(f[3])
    if n == 0:
        log(f"    warning: strace counted no syncs on {server.name}; strace said: "
            f"{err_path.read_text()[-500:]!r}")
        return None
    return n, sfr


def stow(server, body, ctype):
    out = Path(body).parent / f"stow-{server.name}.json"
    r = subprocess.run(
        ["curl", "-sS", "-o", str(out), "-w", "%{http_code} %{time_total}", "-X", "POST",
         "-H", f"Content-Type: {ctype}", "-H", "Accept: application/dicom+json", "-H", "Expect:",
         "--data-binary", f"@{body}", f"{server.dicomweb}/studies"],
        capture_output=True, text=True, check=True)
    code, t = r.stdout.split()
    if code != "200":
        raise RuntimeError(f"STOW to {server.name}: HTTP {code}: {out.read_text()[:2000]}")
    return float(t)


def curl_get(url, accept, dest="/dev/null"):
    r = subprocess.run(["curl", "-sS", "-o", dest, "-w", "%{http_code} %{size_download} %{time_total}",
                        "-H", f"Accept: {accept}", url], capture_output=True, text=True, check=True)
    code, size, t = r.stdout.split()
    if code != "200":
        raise RuntimeError(f"GET {url}: HTTP {code}")
    return int(size), float(t)


def qido_queries(keys, n, rng):
    """The query mix, cycling: exact PatientID, StudyDate range + ModalitiesInStudy,
    AccessionNumber, PatientName prefix wildcard. `keys` is a list of dicts to pick from."""
    qs = []
    for i in range(n):
        k = rng.choice(keys)
        kind = i % 4
        if kind == 0:
            qs.append(("PatientID", {"PatientID": k["patient_id"]}))
        elif kind == 1:
            d = datetime.date(int(k["study_date"][:4]), int(k["study_date"][4:6]), int(k["study_date"][6:]))
            lo = d - datetime.timedelta(days=rng.randrange(0, 7))
            hi = lo + datetime.timedelta(days=6)
            qs.append(("StudyDate+Modality", {"StudyDate": f"{lo:%Y%m%d}-{hi:%Y%m%d}",
                                               "ModalitiesInStudy": k["modality"]}))
        elif kind == 2:
            qs.append(("AccessionNumber", {"AccessionNumber": k["accession"]}))
        else:
            qs.append(("PatientName*", {"PatientName": k["patient_name"].split("^")[0] + "*"}))
    return qs


def run_qido(server, queries, expect_hits=True):
    s = requests.Session()
    s.headers.update({"Accept": "application/dicom+json", "Accept-Encoding": "identity"})
    # Wildcards unescaped: Orthanc does not decode %2A.
    url = lambda params: f"{server.dicomweb}/studies?" + urllib.parse.urlencode(params, safe="*")
    for _, params in queries[:8]:  # warm-up (connection, caches)
        s.get(url(params), timeout=60).content
    lat, by_kind, hits, empty = [], {}, {}, 0
    for kind, params in queries:
        u = url(params)
        t0 = time.perf_counter()
        r = s.get(u, timeout=60)
        body = r.content
        dt = time.perf_counter() - t0
        if r.status_code not in (200, 204):
            raise RuntimeError(f"QIDO {params} on {server.name}: HTTP {r.status_code}: {body[:500]}")
        n = 0 if r.status_code == 204 or not body.strip() else len(json.loads(body))
        empty += n == 0
        lat.append(dt)
        by_kind.setdefault(kind, []).append(dt)
        hits.setdefault(kind, []).append(n)
    s.close()
    if expect_hits and empty:
        log(f"    warning: {empty} of {len(queries)} QIDO queries on {server.name} found nothing")
    return {"p50": percentile(lat, 50), "p99": percentile(lat, 99), "n": len(lat), "empty": empty,
            "by_kind": {k: (percentile(v, 50), percentile(v, 99), statistics.mean(hits[k]))
                        for k, v in by_kind.items()}}


# --------------------------------------------------------------------------------------------
# The 1M-row index


FIRST = ["James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda", "David",
         "Elizabeth", "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas",
         "Sarah", "Charles", "Karen", "Ahmed", "Fatima", "Wei", "Yuki", "Olga", "Ivan", "Lucia",
         "Mateo", "Amara", "Kofi", "Ingrid", "Lars", "Priya", "Ravi", "Sofia", "Luca", "Emma",
         "Noah", "Chloe", "Liam"]
ONSETS = ["B", "Br", "C", "Ch", "D", "F", "G", "Gr", "H", "J", "K", "Kl", "L", "M", "N", "P", "R",
          "S", "Sch", "St", "T", "V", "W", "Z", "Ol", "Al", "Er", "Ab", "Ok", "Ad"]
MIDS = ["a", "e", "i", "o", "u", "ar", "er", "or", "an", "en", "in", "al", "el", "il", "ov"]
ENDS = ["son", "sen", "ez", "ini", "ford", "man", "er", "ova", "ski", "berg", "wood", "afor",
        "ton", "ley", "ard", "ic", "ian", "oy", "ens", "ing"]
MODALITY_MIX = [("CT", 40), ("MR", 25), ("CR", 12), ("DX", 8), ("US", 8), ("NM", 3), ("PT", 2),
                ("XA", 2)]
SOP_CLASS = {"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4",
             "CR": "1.2.840.10008.5.1.4.1.1.1", "DX": "1.2.840.10008.5.1.4.1.1.1.1",
             "US": "1.2.840.10008.5.1.4.1.1.6.1", "NM": "1.2.840.10008.5.1.4.1.1.20",
             "PT": "1.2.840.10008.5.1.4.1.1.128", "XA": "1.2.840.10008.5.1.4.1.1.12.1"}


def uid(rng):
    return "2.25." + str(rng.getrandbits(120))


def jv(vr, v):
    return {"vr": vr, "Value": [v]}


def fill_index(db_path, org, rng):
    """Inserts BIG_PATIENTS patients, BIG_STUDIES studies, ~BIG_SERIES series per study and
    ~BIG_INSTANCES instances per series directly into a stopped server's index."""
    t0 = time.perf_counter()
    con = sqlite3.connect(str(db_path), isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA cache_size=-1000000")
    con.execute("PRAGMA foreign_keys=ON")
    issuer = con.execute("SELECT issuer FROM patients LIMIT 1").fetchone()
    issuer = issuer[0] if issuer else ""
    now_ms = int(time.time() * 1000)
    surnames = sorted({o + m + e for o in ONSETS for m in MIDS for e in ENDS})
    rng.shuffle(surnames)
    surnames = surnames[:2500]
    mods = [m for m, w in MODALITY_MIX for _ in range(w)]
    base_pk = lambda t: con.execute(f"SELECT coalesce(max(id), 0) FROM {t}").fetchone()[0]
    p0, s0, se0 = base_pk("patients"), base_pk("studies"), base_pk("series")

    # Zipf-like surname frequencies, as in real populations: the commonest ~2% of patients.
    weights = [1.0 / (r + 10) for r in range(len(surnames))]
    lasts = rng.choices(surnames, weights=weights, k=BIG_PATIENTS)
    patients, keys = [], []
    for i in range(BIG_PATIENTS):
        last = lasts[i]
        name = f"{last}^{rng.choice(FIRST)}"
        pid = f"BP{i:08d}"
        bd = f"{rng.randrange(1930, 2020)}{rng.randrange(1, 13):02}{rng.randrange(1, 29):02}"
        sex = rng.choice("MF")
        patients.append((p0 + i + 1, org, issuer, pid, name, name.upper(), bd, sex))
    con.execute("BEGIN")
    con.executemany("INSERT INTO patients (id, org, issuer, patient_id, name, name_norm, birth_date, sex) "
                    "VALUES (?,?,?,?,?,?,?,?)", patients)
    con.execute("COMMIT")

    start = datetime.date(2015, 1, 1)
    n_series = n_inst = 0
    study_rows, series_rows, inst_rows = [], [], []
    se_pk = se0
    flush_every = 5000

    def flush():
        con.execute("BEGIN")
        con.executemany(
            "INSERT INTO studies (id, org, study_uid, patient_pk, date, time, accession, referring, "
            "referring_norm, description, study_id, modalities, sop_classes, num_series, num_instances, "
            "attrs, updated_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", study_rows)
        con.executemany(
            "INSERT INTO series (id, study_pk, series_uid, modality, number, description, num_instances, attrs) "
            "VALUES (?,?,?,?,?,?,?,?)", series_rows)
        con.executemany(
            "INSERT INTO instances (series_pk, org, sop_uid, sop_class, number, ts, blob_key, size, sha256, "
            "status, superseded_ms, received_ms, source, attrs, metadata, frames) "
            "VALUES (?,?,?,?,?,?,?,?,?,0,0,?,?,?,?,?)", inst_rows)
        con.execute("COMMIT")
        study_rows.clear()
        series_rows.clear()
        inst_rows.clear()

    for i in range(BIG_STUDIES):
        # Every patient has at least one study; the rest go to random patients.
        p = patients[i] if i < len(patients) else patients[rng.randrange(len(patients))]
        s_pk = s0 + i + 1
        st_uid = uid(rng)
        d = start + datetime.timedelta(days=rng.randrange(0, 3650))
        date, tm = f"{d:%Y%m%d}", f"{rng.randrange(7, 20):02}{rng.randrange(60):02}{rng.randrange(60):02}"
        acc = f"A{s_pk:09d}"
        mod = rng.choice(mods)
        desc = f"{mod} study {rng.randrange(100)}"
        nser = max(1, round(rng.gauss(BIG_SERIES, 1)))
        s_attrs = {
            "00080020": jv("DA", date), "00080030": jv("TM", tm), "00080050": jv("SH", acc),
            "00080090": {"vr": "PN", "Value": [{"Alphabetic": "Referrer^Bench"}]},
            "00081030": jv("LO", desc),
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": p[4]}]},
            "00100020": jv("LO", p[3]), "00100030": jv("DA", p[6]), "00100040": jv("CS", p[7]),
            "0020000D": jv("UI", st_uid), "00200010": jv("SH", str(s_pk)),
        }
        study_inst = 0
        for sn in range(1, nser + 1):
            se_pk += 1
            se_uid = uid(rng)
            ninst = max(1, round(rng.gauss(BIG_INSTANCES, 2)))
            series_rows.append((se_pk, s_pk, se_uid, mod, sn, f"series {sn}", ninst, json.dumps({
                "0008103E": jv("LO", f"series {sn}"), "00080060": jv("CS", mod),
                "0020000E": jv("UI", se_uid), "00200011": jv("IS", sn)}, separators=(",", ":"))))
            for k in range(1, ninst + 1):
                sop = uid(rng)
                inst_rows.append((se_pk, org, sop, SOP_CLASS[mod], k, "1.2.840.10008.1.2.1",
                                  f"{org}/{st_uid}/{se_uid}/{sop}/{'0' * 64}", 525_000, "0" * 64,
                                  now_ms, "bench", json.dumps({
                                      "00080016": jv("UI", SOP_CLASS[mod]), "00080018": jv("UI", sop),
                                      "00200013": jv("IS", k)}, separators=(",", ":")), "{}", "[]"))
            study_inst += ninst
        n_series += nser
        n_inst += study_inst
        study_rows.append((s_pk, org, st_uid, p[0], date, tm, acc, "Referrer^Bench", "REFERRER^BENCH",
                           desc, str(s_pk), f"\\{mod}\\", f"\\{SOP_CLASS[mod]}\\", nser, study_inst,
                           json.dumps(s_attrs, separators=(",", ":")), now_ms))
        keys.append({"patient_id": p[3], "patient_name": p[4], "study_date": date,
                     "accession": acc, "modality": mod})
        if len(study_rows) >= flush_every:
            flush()
    flush()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return {"patients": BIG_PATIENTS, "studies": BIG_STUDIES, "series": n_series,
            "instances": n_inst, "seconds": time.perf_counter() - t0,
            "db_mb": Path(db_path).stat().st_size / 1e6}, keys


# --------------------------------------------------------------------------------------------
# Report


def machine():
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = subprocess.run(["free", "-g"], capture_output=True, text=True).stdout.splitlines()
    total = mem[1].split()[1] if len(mem) > 1 else "?"
    fs = subprocess.run(["df", "-T", str(ROOT)], capture_output=True, text=True).stdout.splitlines()
    fsdesc = " ".join(fs[1].split()[:2]) if len(fs) > 1 else "?"
    ver = lambda cmd: (subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines() or ["?"])[0]
    return {
        "nproc": os.cpu_count(), "cpu": cpu, "mem_gb": total, "kernel": platform.release(),
        "fs": fsdesc, "orthanc": ver([ORTHANC_BIN, "--version"]).split()[-1] if "orthanc" in SIDES else "-",
        "dicomweb": subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "orthanc-dicomweb"],
                                   capture_output=True, text=True).stdout or "?",
        "dcmtk": subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "dcmtk"],
                                capture_output=True, text=True).stdout or "?",
        "vesalius_rev": (subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                        capture_output=True, text=True).stdout.strip() or "?")
        + (" + uncommitted changes" if subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "crates", "Cargo.lock"],
            capture_output=True, text=True).stdout.strip() else ""),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }


def fmt(x, digits=1):
    if x is None or (isinstance(x, float) and x != x):
        return "—"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def ratio(v, o, higher_better):
    if not v or not o or v != v or o != o:
        return "—"
    r = v / o if higher_better else o / v
    return f"{r:.1f}×"


def render(rows, md):
    head = ["Measure", "Vesalius", "Orthanc", "Ratio (>1: Vesalius better)", "Note"]
    if md:
        out = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(out)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths))
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])


# --------------------------------------------------------------------------------------------


def main():
    t_start = time.time()
    base = os.environ.get("BENCH_WORKDIR")
    if base:
        work = Path(base)
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="vesalius-bench.", dir="/var/tmp"))
    log(f"work directory: {work}  (sides: {', '.join(SIDES)})")
    rng = random.Random(1)

    synth = work / "synth"
    if synth.exists():
        shutil.rmtree(synth)
    synth.mkdir()
    files = synthesize(synth)
    ct_dir = files[0].parent
    total_bytes = sum(f.stat().st_size for f in files)
    mb = total_bytes / 1e6
    keys = study_keys(files[0])
    log(f"data: {len(files)} files, {mb:.1f} MB, study {keys['study_uid']}")
    body = work / "stow-body.bin"
    ctype = build_stow_body(files, body)

    bound_samples = {m: [] for m in BOUND_MODES}

    def measure_bounds(rep):
        disk_bounds(work / "bounds", len(files), bound_samples, rep)
        log(f"  disk bounds ({len(files)} files of 512 KB): one fsync per file "
            f"{bound_samples['serial'][-1]:.0f} files/s, +dir fsync {bound_samples['serial_dir'][-1]:.0f}, "
            f"batched fsync {bound_samples['batch_fsync'][-1]:.0f}, "
            f"batched syncfs {bound_samples['batch_syncfs'][-1]:.0f} files/s")

    R = {s: {"cstore1": [], "cstore4": [], "stow": [], "cpu_cstore1": [], "cpu_cstore4": [],
             "cpu_stow": [], "ccpu_cstore1": [], "ccpu_cstore4": [], "ccpu_stow": [], "hwm": {}}
         for s in SIDES}
    stage_n = 0

    def fresh(side, tag):
        nonlocal stage_n
        stage_n += 1
        d = work / f"{side}-{stage_n:02}-{tag}"
        return make_server(side, d)

    def finish(srv, tag):
        hwm = srv.stop()
        R[srv.name]["hwm"][tag] = max(R[srv.name]["hwm"].get(tag, 0), hwm)
        shutil.rmtree(srv.data_dir, ignore_errors=True)

    # Untimed warm-up: the first ingest of a run is consistently slower (caches, writeback).
    for side in SIDES:
        srv = fresh(side, "warmup").start()
        storescu(srv, files, 1, ct_dir)
        finish(srv, "warmup")
    os.sync()

    # Ingest stages: each round runs every stage on each server, on fresh data directories.
    for rnd in range(ROUNDS):
        measure_bounds(rnd)
        order = SIDES if rnd % 2 == 0 else list(reversed(SIDES))
        for stage in ("cstore1", "cstore4", "stow"):
            for side in order:
                srv = fresh(side, stage).start()
                os.sync()
                cpu0 = cpu_seconds(srv.pid)
                ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                if stage == "stow":
                    dt = stow(srv, body, ctype)
                else:
                    dt = storescu(srv, files, 1 if stage == "cstore1" else 4, ct_dir)
                cpu = cpu_seconds(srv.pid) - cpu0
                ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                ccpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
                R[side]["cpu_" + stage].append(cpu)
                R[side]["ccpu_" + stage].append(ccpu)
                n = srv.count_instances(keys["study_uid"])
                if n != len(files):
                    raise RuntimeError(f"{side} {stage}: {n} instances stored, expected {len(files)}")
                R[side][stage].append(dt)
                log(f"  round {rnd + 1} {stage:8} {side:9} {dt:6.2f} s  {len(files) / dt:7.1f} inst/s "
                    f"{mb / dt:7.1f} MB/s  CPU server {cpu:5.2f} s client {ccpu:5.2f} s  RSS peak {vm_hwm_kb(srv.pid) / 1024:.0f} MB")
                finish(srv, stage)

    for rep in range(ROUNDS, BOUNDS_REPS):
        measure_bounds(rep)
    bounds = summarize_bounds(bound_samples)

    # Untimed diagnostic passes: syncs per instance (strace), and CPU profiles (perf).
    syncs = {}
    for side in SIDES:
        for stage in ("cstore1", "stow"):
            srv = fresh(side, "diag-" + stage).start()
            n = count_syncs(srv, lambda: stow(srv, body, ctype) if stage == "stow"
                            else storescu(srv, files, 1, ct_dir), work / f"strace-{side}-{stage}.txt")
            syncs[(side, stage)] = (n[0] / len(files), n[1] / len(files)) if n is not None else None
            finish(srv, "diag")
    if PERF and "vesalius" in SIDES:
        for pstage in ("cstore1", "cstore4", "stow"):
            srv = fresh("vesalius", "perf-" + pstage).start()
            perf = Perf(srv.pid, work / f"perf-vesalius-{pstage}.data")
            if pstage == "stow":
                stow(srv, body, ctype)
            else:
                storescu(srv, files, 1 if pstage == "cstore1" else 4, ct_dir)
            perf.finish()
            finish(srv, "diag")
    if syncs:
        log("  per instance (strace -f): durable syncs (fsync/fdatasync) + sync_file_range: " + ", ".join(
            f"{k[0]} {k[1]} {v[0]:.2f} + {v[1]:.2f}" for k, v in syncs.items() if v is not None))

    # Read stages: one fresh server each, filled over one association.
    reads = {}
    for side in SIDES:
        srv = fresh(side, "reads").start()
        storescu(srv, files, 1, ct_dir)
        os.sync()
        url = f"{srv.dicomweb}/studies/{keys['study_uid']}"
        wado = [curl_get(url, WADO_ACCEPT) for _ in range(WADO_N)]
        if any(abs(s - total_bytes) > total_bytes * 0.05 for s, _ in wado):
            raise RuntimeError(f"{side} WADO-RS returned {wado[0][0]} bytes, files hold {total_bytes}")
        curl_get(url + "/metadata", "application/dicom+json")  # warm-up
        meta = [curl_get(url + "/metadata", "application/dicom+json") for _ in range(META_N)]
        qido = run_qido(srv, qido_queries([keys], QIDO_N, random.Random(2)))
        reads[side] = {"wado": median([t for _, t in wado]), "wado_bytes": wado[0][0],
                       "meta": median([t for _, t in meta]), "meta_bytes": meta[0][0], "qido": qido}
        log(f"  reads {side:9} WADO-RS {reads[side]['wado']:.3f} s, metadata {reads[side]['meta'] * 1000:.1f} ms "
            f"({meta[0][0]} B), QIDO p50 {qido['p50'] * 1000:.2f} ms p99 {qido['p99'] * 1000:.2f} ms")

        big = None
        if side == "vesalius" and BIG:
            srv.stop()
            R[side]["hwm"]["reads"] = max(R[side]["hwm"].get("reads", 0), srv.hwm_kb)
            org = sqlite3.connect(str(srv.data_dir / "index.db")).execute(
                "SELECT org FROM patients LIMIT 1").fetchone()[0]
            log(f"  filling the Vesalius index with ~{BIG_STUDIES * BIG_SERIES * BIG_INSTANCES:,} instance rows ...")
            info, big_keys = fill_index(srv.data_dir / "index.db", org, random.Random(3))
            log(f"    {info['patients']:,} patients, {info['studies']:,} studies, {info['series']:,} series, "
                f"{info['instances']:,} instances in {info['seconds']:.0f} s; index.db {info['db_mb']:.0f} MB")
            t0 = time.perf_counter()
            srv.start()
            restart = time.perf_counter() - t0
            t0 = time.perf_counter()
            ready_code = requests.get(f"{srv.base}/readyz", timeout=300).status_code
            readyz = time.perf_counter() - t0
            log(f"    restart {restart:.1f} s; one /readyz probe {readyz:.2f} s (HTTP {ready_code})")
            perf = Perf(srv.pid, work / "perf-vesalius-qido1m.data")
            q = run_qido(srv, qido_queries(big_keys, QIDO_N, random.Random(4)))
            if perf.proc:
                perf.finish()
            big = {"info": info, "qido": q, "restart": restart, "readyz": readyz}
            log(f"    QIDO on the filled index p50 {q['p50'] * 1000:.2f} ms, p99 {q['p99'] * 1000:.2f} ms")
            for kind, (p50, p99, nres) in q["by_kind"].items():
                log(f"      {kind:20} p50 {p50 * 1000:7.2f} ms  p99 {p99 * 1000:7.2f} ms  "
                    f"{nres:6.1f} studies per answer")
            if BIG_ANALYZE:
                # Diagnostic: the same queries once SQLite surely has fresh statistics.
                srv.stop()
                t0 = time.perf_counter()
                con = sqlite3.connect(str(srv.data_dir / "index.db"))
                con.execute("ANALYZE")
                con.close()
                analyze_s = time.perf_counter() - t0
                srv.start()
                qa = run_qido(srv, qido_queries(big_keys, QIDO_N, random.Random(4)))
                big["analyzed"] = qa
                big["analyze_s"] = analyze_s
                log(f"    after ANALYZE ({analyze_s:.1f} s): p50 {qa['p50'] * 1000:.2f} ms, "
                    f"p99 {qa['p99'] * 1000:.2f} ms")
                for kind, (p50, p99, nres) in qa["by_kind"].items():
                    log(f"      {kind:20} p50 {p50 * 1000:7.2f} ms  p99 {p99 * 1000:7.2f} ms")
            reads[side]["big"] = big
            finish(srv, "1M")
        else:
            finish(srv, "reads")

    # ----------------------------------------------------------------------------------------
    def get(side, key):
        return R[side][key] if side in R else []

    def ing(key, side):
        xs = get(side, key)
        return (len(files) / median(xs), mb / median(xs)) if xs else (None, None)

    rows = []
    notes = {"cstore1": "one storescu association", "cstore4": "4 storescu processes, 75 files each"
             if len(files) == 300 else "4 storescu processes, a quarter each",
             "stow": "one multipart request, curl --data-binary"}
    labels = {"cstore1": "C-STORE, 1 association", "cstore4": "C-STORE, 4 associations",
              "stow": "STOW-RS, 1 request"}
    for key in ("cstore1", "cstore4", "stow"):
        v, o = ing(key, "vesalius"), ing(key, "orthanc")
        rows.append([labels[key] + " (inst/s)", fmt(v[0]), fmt(o[0]), ratio(v[0], o[0], True),
                     notes[key]])
        rows.append([labels[key] + " (MB/s)", fmt(v[1]), fmt(o[1]), ratio(v[1], o[1], True), ""])
    rv, ro = reads.get("vesalius"), reads.get("orthanc")
    g = lambda r, k: r[k] if r else None
    rows.append(["WADO-RS whole study (s)", fmt(g(rv, "wado"), 3), fmt(g(ro, "wado"), 3),
                 ratio(g(rv, "wado"), g(ro, "wado"), False),
                 f"median of {WADO_N}; {mb:.0f} MB" + (f", {mb / rv['wado']:.0f} MB/s Vesalius" if rv else "")])
    mv, mo = g(rv, "meta"), g(ro, "meta")
    rows.append(["Study metadata (ms)", fmt(mv and mv * 1000, 2), fmt(mo and mo * 1000, 2),
                 ratio(mv, mo, False), f"median of {META_N}; target ≥20×"])
    qv, qo = g(rv, "qido"), g(ro, "qido")
    for p in ("p50", "p99"):
        rows.append([f"QIDO {p} (ms), 1 study", fmt(qv and qv[p] * 1000, 2), fmt(qo and qo[p] * 1000, 2),
                     ratio(qv and qv[p], qo and qo[p], False),
                     f"{QIDO_N} requests, keep-alive, 4-query mix" if p == "p50" else ""])
    cpu = lambda side: (" / ".join(fmt(median(R[side]["cpu_" + k]), 2) for k in ("cstore1", "cstore4", "stow"))
                        if side in R else "—")
    rows.append(["Server CPU s per ingest (×1 / ×4 / STOW)", cpu("vesalius"), cpu("orthanc"), "—",
                 "utime+stime of the server process, median"])
    ccpu = lambda side: (" / ".join(fmt(median(R[side]["ccpu_" + k]), 2) for k in ("cstore1", "cstore4", "stow"))
                         if side in R else "—")
    rows.append(["Client CPU s per ingest (×1 / ×4 / STOW)", ccpu("vesalius"), ccpu("orthanc"), "—",
                 "storescu / curl, same 2 cores"])
    peak = lambda side: (max(v for k, v in R[side]["hwm"].items() if k in ("cstore1", "cstore4", "stow", "reads"))
                         / 1024 if side in R else None)
    hv, ho = peak("vesalius"), peak("orthanc")
    rows.append(["Peak RSS (MB)", fmt(hv), fmt(ho), ratio(hv, ho, False),
                 "max VmHWM over the ingest and read stages"])
    def sync_cell(side, i):
        return " / ".join(fmt(syncs[(side, st)][i], 2) if syncs.get((side, st)) else "—"
                          for st in ("cstore1", "stow"))
    if syncs:
        rows.append(["fsync/fdatasync per instance, C-STORE ×1 / STOW", sync_cell("vesalius", 0),
                     sync_cell("orthanc", 0), "—", "durable syncs (strace, untimed pass)"])
        rows.append(["sync_file_range per instance, ×1 / STOW", sync_cell("vesalius", 1),
                     sync_cell("orthanc", 1), "—", "writeback hints, not syncs"])
    big = rv.get("big") if rv else None
    if big:
        big_label = f"{big['info']['instances'] / 1e6:.2g}M"
        for p in ("p50", "p99"):
            rows.append([f"QIDO {p} (ms), {big_label} instances", fmt(big["qido"][p] * 1000, 2), "—", "—",
                         (f"{big['info']['studies']:,} studies, {big['info']['instances']:,} instances; target p99 ≤10 ms"
                          if p == "p99" else "Vesalius only")])
        if "analyzed" in big:
            for p in ("p50", "p99"):
                rows.append([f"QIDO {p} (ms), {big_label}, after ANALYZE", fmt(big["analyzed"][p] * 1000, 2), "—", "—",
                             "diagnostic: the harness runs ANALYZE first" if p == "p50" else ""])
        rows.append([f"Restart / one /readyz, {big_label} (s)", f"{big['restart']:.1f} / {big['readyz']:.1f}",
                     "—", "—", "server start on the filled index; then one GET /readyz"])
        rows.append([f"Peak RSS with the {big_label} index (MB)", fmt(R["vesalius"]["hwm"].get("1M", 0) / 1024), "—", "—",
                     "SQLite page caches (64 MB per connection)"])

    brows = []
    per_file_mb = 512 * 1024 / 1e6
    brows.append(["write+fsync, one file at a time", f"{bounds['serial']:.0f} files/s",
                  f"{bounds['serial'] * per_file_mb:.0f} MB/s"])
    brows.append(["write+fsync+dir fsync, one at a time", f"{bounds['serial_dir']:.0f} files/s",
                  f"{bounds['serial_dir'] * per_file_mb:.0f} MB/s"])
    brows.append([f"batched: write {len(files)}, fsync each", f"{bounds['batch_fsync']:.0f} files/s",
                  f"{bounds['batch_fsync'] * per_file_mb:.0f} MB/s"])
    brows.append([f"batched: write {len(files)}, syncfs once", f"{bounds['batch_syncfs']:.0f} files/s",
                  f"{bounds['batch_syncfs'] * per_file_mb:.0f} MB/s"])
    pct_rows = []
    for key, bound, bname, target in (("cstore1", bounds["serial"], "one-fsync-per-file", 50),
                                      ("cstore4", bounds["batched"], "batched", 80),
                                      ("stow", bounds["batched"], "batched", 80)):
        cells = [labels[key], f"of the {bname} bound (target ≥{target}%)"]
        for side in ("vesalius", "orthanc"):
            v = ing(key, side)[0]
            cells.append(f"{100 * v / bound:.0f}%" if v else "—")
        pct_rows.append(cells)

    elapsed = time.time() - t_start
    m = machine()
    rss_stages = {s: {k: f"{v / 1024:.0f}" for k, v in R[s]["hwm"].items()} for s in SIDES}

    text = []
    text.append(render(rows, md=False))
    text.append("")
    text.append("Raw disk bounds (512 KB files, same directory tree, median of "
                f"{len(bound_samples['serial'])}):")
    w = max(len(r[0]) for r in brows)
    text += [f"  {r[0].ljust(w)}  {r[1]:>12}  {r[2]:>10}" for r in brows]
    text.append("")
    text.append("Ingest as a share of the disk bounds:        Vesalius  Orthanc")
    text += [f"  {r[0]:24} {r[1]:44} {r[2]:>6}  {r[3]:>6}" for r in pct_rows]
    text.append("")
    text.append(f"peak RSS by stage (MB): {json.dumps(rss_stages)}")
    text.append(f"ingest samples (s): " + json.dumps({s: {k: [round(x, 3) for x in R[s][k]]
                                                          for k in ('cstore1', 'cstore4', 'stow')} for s in SIDES}))
    text.append(f"bound samples (files/s): " + json.dumps({k: [round(x) for x in v]
                                                            for k, v in bounds['samples'].items()}))
    text.append(f"total time {elapsed / 60:.1f} min")
    log("")
    log("\n".join(text))

    if DOC:
        knobs = " ".join(f"{k}={os.environ[k]}" for k in sorted(os.environ)
                         if k.startswith("BENCH_") and k not in ("BENCH_PIDFILE", "BENCH_DOC_PATH"))
        md = []
        md.append(f"\n## Run of {datetime.datetime.now():%Y-%m-%d %H:%M} (Vesalius {m['vesalius_rev']})\n")
        md.append(f"- Machine: {m['nproc']} vCPU ({m['cpu']}), {m['mem_gb']} GB RAM, {m['fs']}, "
                  f"Linux {m['kernel']}; load average at the end {' '.join(m['loadavg'])}.")
        md.append(f"- Peers: Orthanc {m['orthanc']} with orthanc-dicomweb {m['dicomweb']} (Debian), "
                  f"DCMTK {m['dcmtk']} storescu, curl, python-requests.")
        md.append(f"- Command: `{(knobs + ' ') if knobs else ''}scripts/bench` — {len(files)} slices "
                  f"({mb:.0f} MB), rounds: {ROUNDS}, max PDU {PDU}; {elapsed / 60:.1f} min in all.\n")
        md.append(render(rows, md=True))
        md.append("\nRaw disk bounds (512 KB files in the same directory tree, median of "
                  f"{len(bound_samples['serial'])}, one measured before each ingest round):\n")
        md.append("| Pattern | files/s | MB/s |\n|---|---|---|")
        md += [f"| {r[0]} | {r[1].split()[0]} | {r[2].split()[0]} |" for r in brows]
        md.append("\n| Ingest | as a share of | Vesalius | Orthanc |\n|---|---|---|---|")
        md += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} |" for r in pct_rows]
        if big:
            md.append(f"\nQIDO on the {big_label}-instance index, by query (ms):\n")
            md.append("| Query | p50 | p99 | studies per answer (mean) |\n|---|---|---|---|")
            if "analyzed" in big:
                md[-1] = ("| Query | p50 | p99 | p50 after ANALYZE | p99 after ANALYZE | studies per answer (mean) |"
                          "\n|---|---|---|---|---|---|")
                md += [f"| {k} | {p50 * 1000:.2f} | {p99 * 1000:.2f} | {big['analyzed']['by_kind'][k][0] * 1000:.2f} | "
                       f"{big['analyzed']['by_kind'][k][1] * 1000:.2f} | {n:.1f} |"
                       for k, (p50, p99, n) in big["qido"]["by_kind"].items()]
            else:
                md += [f"| {k} | {p50 * 1000:.2f} | {p99 * 1000:.2f} | {n:.1f} |"
                       for k, (p50, p99, n) in big["qido"]["by_kind"].items()]
            md.append(f"\nIndex filled in {big['info']['seconds']:.0f} s ({big['info']['patients']:,} patients, "
                      f"{big['info']['studies']:,} studies, {big['info']['series']:,} series, "
                      f"{big['info']['instances']:,} instances, index.db {big['info']['db_mb']:.0f} MB); "
                      f"server restart {big['restart']:.1f} s.")
        md.append(f"\nPeak RSS by stage (MB): `{json.dumps(rss_stages)}`. Ingest samples (s): "
                  f"`{json.dumps({s: {k: [round(x, 2) for x in R[s][k]] for k in ('cstore1', 'cstore4', 'stow')} for s in SIDES})}`.")
        doc = Path(os.environ.get("BENCH_DOC_PATH", ROOT / "docs/benchmarks.md"))
        with open(doc, "a") as f:
            f.write("\n".join(md) + "\n")
        log(f"appended to {doc}")

    if not KEEP and not os.environ.get("BENCH_WORKDIR"):
        shutil.rmtree(work, ignore_errors=True)


def _cleanup(*_):
    for p in list(_procs):
        if p.poll() is None:
            p.kill()
            p.wait()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    try:
        main()
    finally:
        _cleanup()
