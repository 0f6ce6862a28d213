#!/usr/bin/env python3
"""Spoke-to-hub forwarding: Vesalius against Orthanc in the same run (issue 5, docs/benchmarks.md).

Run through `scripts/bench exchange`, which builds the release binary. A 300-slice synthetic CT
is sent by DCMTK storescu (one association) into a spoke that forwards it to a hub:

- Vesalius: two `vesalius serve` processes peered with each other, a route on the spoke sending
  every CT to peer:hub at stroke priority (STOW-RS batches, manifests, "study complete").
- Orthanc: two Orthanc processes; the spoke's Lua `OnStoredInstance` calls `SendToPeer` for every
  instance (streaming forwarding over Orthanc's REST API).

Measured per repetition, every server on fresh data directories:
- lag to all instances: last C-STORE response at the spoke -> the hub's query shows all
  instances (Vesalius: QIDO NumberOfStudyRelatedInstances; Orthanc: /statistics), polled every
  BENCH_POLL_MS (a coarser poll while storescu runs);
- lag to "study complete" (Vesalius only: the hub's arrival record, written with the event);
- end to end: storescu started (its first C-STORE follows the association) -> study complete at
  the hub (Orthanc: all instances there, it has no such event);
- the spoke's own ingest: storescu into a spoke without the route (same measure as the send).
The last C-STORE response is the time storescu (-v) printed its last "Received Store Response";
all clocks are this machine's wall clock.

Then the same through tests/tools/netproxy.py emulating a WAN link between spoke and hub
(BENCH_WAN_DELAY_MS each way, BENCH_WAN_MBIT): time to complete at the hub against the time the
study's raw bytes need at that bandwidth.

Knobs (environment):
  BENCH_REPS=20            loopback repetitions (p50/p95 over them)
  BENCH_WAN_REPS=3         repetitions through the WAN proxy (0: skip)
  BENCH_WAN_DELAY_MS=20    proxy latency each way
  BENCH_WAN_MBIT=100       proxy bandwidth each direction
  BENCH_SLICES=300         CT slices
  BENCH_POLL_MS=5          poll interval of the hub after the last C-STORE response
  BENCH_ENCODING=auto      [exchange] content_encoding of the Vesalius spoke (auto | gzip | identity)
  BENCH_ONLY=              "vesalius" or "orthanc" to run one side only
  BENCH_PERF=0             1: perf profiles (cpu-clock) of the Vesalius spoke and hub per repetition
  BENCH_DOC=1              append the results to docs/benchmarks.md (0: print only)
  BENCH_KEEP=0             1: keep the work directory
  VESALIUS_BIN=            the binary (default target/release/vesalius)
"""

import json
import os
import resource
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as B  # noqa: E402  (helpers: servers, synth, percentiles, machine)

ROOT = B.ROOT
REPS = B.env_int("BENCH_REPS", 20)
WAN_REPS = B.env_int("BENCH_WAN_REPS", 3)
WAN_DELAY_MS = B.env_int("BENCH_WAN_DELAY_MS", 20)
WAN_MBIT = B.env_int("BENCH_WAN_MBIT", 100)
POLL_S = B.env_int("BENCH_POLL_MS", 5) / 1000.0
ENCODING = os.environ.get("BENCH_ENCODING", "auto").strip()
ONLY = os.environ.get("BENCH_ONLY", "").strip().lower()
SIDES = [s for s in ("vesalius", "orthanc") if not ONLY or ONLY == s]
DOC = B.env_int("BENCH_DOC", 1)
KEEP = B.env_int("BENCH_KEEP", 0)
HUB, SPOKE, ORG = "hub", "spoke", "default"
log = B.log


# --------------------------------------------------------------------------------------------
# Servers


class VesaliusSite(B.Vesalius):
    """`vesalius serve` as a named site of the exchange network."""

    def __init__(self, data_dir, site):
        super().__init__(data_dir)
        self.site = site

    def admin(self, *args):
        env = dict(os.environ)
        env["VESALIUS__SITE__NAME"] = self.site
        p = subprocess.run([B.VESALIUS_BIN, "admin", *args, "--data-dir", str(self.data_dir)],
                           capture_output=True, text=True, env=env, timeout=120)
        if p.returncode != 0:
            raise RuntimeError(f"vesalius admin {' '.join(args)}: {p.stdout}{p.stderr}")
        return p.stdout

    def public_key(self):
        return json.loads(self.admin("site", "show", "--json"))["public_key"]

    def start(self):
        os.environ["VESALIUS__SITE__NAME"] = self.site
        os.environ["VESALIUS__EXCHANGE__CONTENT_ENCODING"] = ENCODING
        try:
            return super().start()
        finally:
            for k in ("VESALIUS__SITE__NAME", "VESALIUS__EXCHANGE__CONTENT_ENCODING"):
                os.environ.pop(k, None)


def orthanc_pair(work, rep, hub_url_of=None):
    """An Orthanc hub and an Orthanc spoke forwarding every stored instance to it (Lua)."""
    hub = B.Orthanc(work / f"o-hub-{rep}").start()
    url = hub_url_of(hub) if hub_url_of else hub.base
    spoke = ForwardingOrthanc(work / f"o-spoke-{rep}", url).start()
    return hub, spoke


class ForwardingOrthanc(B.Orthanc):
    """An Orthanc whose `OnStoredInstance` sends each instance to peer `hub` (SendToPeer)."""

    def __init__(self, data_dir, hub_url):
        super().__init__(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        lua = self.data_dir / "forward.lua"
        lua.write_text("function OnStoredInstance(instanceId, tags, metadata, origin)\n"
                       "  SendToPeer(instanceId, 'hub')\n"
                       "end\n")
        self.extra_config = {"OrthancPeers": {"hub": [hub_url.rstrip("/") + "/"]},
                             "LuaScripts": [str(lua)]}


# --------------------------------------------------------------------------------------------
# Measuring


def storescu_timed(server, ct_dir):
    """Sends the study in one association; returns (start, last C-STORE response, exit) times."""
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    cmd = [B.STORESCU, "-v", "-aec", server.ae, "+sd", "+r", "127.0.0.1", str(server.dicom_port),
           str(ct_dir)]
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         bufsize=1)
    last = None
    tail = []
    for line in p.stdout:
        if "Received Store Response" in line:
            last = time.time()
        tail = (tail + [line])[-40:]
    p.wait()
    t_exit = time.time()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    # storescu's CPU time (the only child reaped meanwhile: servers are reaped when stopped).
    global LAST_STORESCU_CPU
    LAST_STORESCU_CPU = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    out = "".join(tail)
    if p.returncode != 0 or re.search(r"^[EF]:", out, re.M):
        raise RuntimeError(f"storescu to {server.name} failed (rc {p.returncode}):\n{out[-2000:]}")
    return t0, last or t_exit, t_exit


class Poller(threading.Thread):
    """Polls `probe()` until it returns true; `.at` is the wall-clock time it first did. Coarse
    (every `slow` s) until `fast()` is set, then every POLL_S."""

    def __init__(self, probe, slow=0.05, timeout=600):
        super().__init__(daemon=True)
        self.probe, self.slow, self.deadline = probe, slow, time.time() + timeout
        self.fast = threading.Event()
        self.at = None
        self.error = None

    def run(self):
        while time.time() < self.deadline:
            try:
                if self.probe():
                    self.at = time.time()
                    return
            except Exception as e:  # a server busy or restarting: try again
                self.error = e
            time.sleep(POLL_S if self.fast.is_set() else self.slow)


def qido_count(session, server, study_uid):
    r = session.get(f"{server.dicomweb}/studies", params={"StudyInstanceUID": study_uid},
                    headers={"Accept": "application/dicom+json"}, timeout=10)
    if r.status_code == 204 or not r.content:
        return 0
    r.raise_for_status()
    rows = r.json()
    return int(rows[0].get("00201208", {}).get("Value", [0])[0]) if rows else 0


def orthanc_count(session, server):
    r = session.get(f"{server.base}/statistics", timeout=10)
    r.raise_for_status()
    return int(r.json()["CountInstances"])


def arrival_complete_ms(hub, study_uid, n):
    """The hub's arrival record: when a final manifest of all `n` instances was satisfied (s),
    or None. (A pause of the sender longer than `settle_ms` mid-study makes an earlier final
    manifest of the instances so far; the study is complete again when the rest has come.)"""
    db = hub.data_dir / "index.db"
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        row = con.execute("SELECT complete_ms, manifest_instances FROM arrivals WHERE study_uid = ?",
                          (study_uid,)).fetchone()
    finally:
        con.close()
    return row[0] / 1000.0 if row and row[0] and row[1] >= n else None


# --------------------------------------------------------------------------------------------
# Runs


class Proxy:
    """tests/tools/netproxy.py in front of `target_port`."""

    def __init__(self, script, work, name, target_port):
        self.stats_path = work / f"{name}.stats.json"
        self.proc = subprocess.Popen(
            [sys.executable, str(script), "--listen", "127.0.0.1:0", "--target",
             f"127.0.0.1:{target_port}", "--delay-ms", str(WAN_DELAY_MS), "--rate-mbit", str(WAN_MBIT),
             "--stats", str(self.stats_path)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        B.register(self.proc)
        line = self.proc.stdout.readline()
        m = re.match(r"LISTENING (\d+)", line)
        if not m:
            raise RuntimeError(f"netproxy did not start: {line}{self.proc.stdout.read()[:2000]}")
        self.port = int(m.group(1))

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        try:
            return json.loads(self.stats_path.read_text())
        except (OSError, ValueError):
            return {}


def vesalius_pair(work, rep, proxy_script=None):
    """A Vesalius hub and spoke, peered, the spoke routing CTs to the hub (through a proxy when
    `proxy_script`). Returns (hub, spoke, proxy)."""
    hub = VesaliusSite(work / f"v-hub-{rep}", HUB)
    spoke = VesaliusSite(work / f"v-spoke-{rep}", SPOKE)
    # Organisation `default` takes the storescu caller's stores (bench.Vesalius) and, at the
    # hub, the spoke's deliveries.
    hub.admin("org", "create", ORG)
    spoke.admin("org", "create", ORG)
    hub.admin("peer", "add", SPOKE, "--url", "http://127.0.0.1:9", "--public-key", spoke.public_key(),
              "--org", ORG)
    hub_key = hub.public_key()
    hub.start()
    proxy = None
    url = hub.base
    if proxy_script:
        proxy = Proxy(proxy_script, work, f"v-proxy-{rep}", hub.http_port)
        url = f"http://127.0.0.1:{proxy.port}"
    spoke.admin("peer", "add", HUB, "--url", url, "--public-key", hub_key, "--org", ORG)
    spoke.admin("route", "add", "ct-to-hub", "--org", ORG, "--to", f"peer:{HUB}", "--modality", "CT",
                "--priority", "100")
    spoke.start()
    return hub, spoke, proxy


def run_vesalius(work, rep, ct_dir, study_uid, n, proxy_script=None):
    hub, spoke, proxy = vesalius_pair(work, rep, proxy_script)
    try:
        s = requests.Session()
        all_in = Poller(lambda: qido_count(s, hub, study_uid) >= n)
        complete = Poller(lambda: arrival_complete_ms(hub, study_uid, n) is not None)
        all_in.start()
        complete.start()
        cpu0 = (B.cpu_seconds(spoke.proc.pid), B.cpu_seconds(hub.proc.pid))
        # BENCH_PERF=1: perf profiles of both sites over the send (bench.Perf).
        perfs = [B.Perf(site.proc.pid, site.data_dir.parent / f"perf-{site.site}-{rep}.data")
                 for site in (spoke, hub)] if B.PERF else []
        t0, t_last, _ = storescu_timed(spoke, ct_dir)
        all_in.fast.set()
        complete.fast.set()
        all_in.join()
        complete.join()
        if all_in.at is None or complete.at is None:
            raise RuntimeError(f"vesalius rep {rep}: the hub did not get the study "
                               f"({all_in.error or complete.error})")
        t_complete = arrival_complete_ms(hub, study_uid, n)
        for p in perfs:
            p.finish()
        # CPU seconds each process spent from the first C-STORE to the study complete (the
        # poll's own requests to the hub included: a few ms).
        cpu = {"spoke": B.cpu_seconds(spoke.proc.pid) - cpu0[0], "hub": B.cpu_seconds(hub.proc.pid) - cpu0[1],
               "storescu": LAST_STORESCU_CPU}
        stats = proxy.stop() if proxy else {}
        return {"t0": t0, "last": t_last, "all_in": all_in.at, "complete": t_complete,
                "wire_bytes": stats.get("bytes_client_to_target"), "cpu": cpu}
    finally:
        if proxy:
            proxy.stop()
        spoke.stop()
        hub.stop()
        if not KEEP:
            for d in (hub.data_dir, spoke.data_dir):
                shutil.rmtree(d, ignore_errors=True)


def run_orthanc(work, rep, ct_dir, n, proxy_script=None):
    proxy = None

    def hub_url(hub):
        nonlocal proxy
        if not proxy_script:
            return hub.base
        proxy = Proxy(proxy_script, work, f"o-proxy-{rep}", hub.http_port)
        return f"http://127.0.0.1:{proxy.port}"

    hub, spoke = orthanc_pair(work, rep, hub_url)
    try:
        s = requests.Session()
        all_in = Poller(lambda: orthanc_count(s, hub) >= n)
        all_in.start()
        t0, t_last, _ = storescu_timed(spoke, ct_dir)
        all_in.fast.set()
        all_in.join()
        if all_in.at is None:
            raise RuntimeError(f"orthanc rep {rep}: the hub did not get the study ({all_in.error})")
        stats = proxy.stop() if proxy else {}
        return {"t0": t0, "last": t_last, "all_in": all_in.at, "complete": all_in.at,
                "wire_bytes": stats.get("bytes_client_to_target")}
    finally:
        if proxy:
            proxy.stop()
        spoke.stop()
        hub.stop()
        if not KEEP:
            for d in (hub.data_dir, spoke.data_dir):
                shutil.rmtree(d, ignore_errors=True)


LAST_STORESCU_CPU = float("nan")
ALONE_CPU = []  # per run_alone: CPU seconds of the lone spoke and of storescu


def run_alone(work, side, rep, ct_dir):
    """The spoke's own ingest: storescu into a lone server (no route, no peer)."""
    srv = (VesaliusSite(work / f"v-alone-{rep}", SPOKE) if side == "vesalius"
           else B.Orthanc(work / f"o-alone-{rep}"))
    srv.start()
    try:
        c0 = B.cpu_seconds(srv.proc.pid)
        t0, t_last, _ = storescu_timed(srv, ct_dir)
        ALONE_CPU.append({"spoke": B.cpu_seconds(srv.proc.pid) - c0, "storescu": LAST_STORESCU_CPU})
        return t_last - t0
    finally:
        srv.stop()
        if not KEEP:
            shutil.rmtree(srv.data_dir, ignore_errors=True)


def netproxy_script(work):
    p = ROOT / "tests/tools/netproxy.py"
    if p.exists():
        return p
    # Until the fault-injection branch is merged: its version of the proxy.
    text = subprocess.run(["git", "-C", str(ROOT), "show", "faults:tests/tools/netproxy.py"],
                          capture_output=True, text=True)
    if text.returncode != 0:
        return None
    out = work / "netproxy.py"
    out.write_text(text.stdout)
    return out


def pct(xs, p):
    return B.percentile(xs, p)


def fmt(x, unit="s"):
    return "—" if x is None or x != x else f"{x:.2f} {unit}".strip()


WORK = None  # the run's work directory, removed at exit unless BENCH_KEEP=1


def main():
    global WORK
    work = WORK = Path(tempfile.mkdtemp(prefix="vesalius-bench-exchange.", dir="/var/tmp"))
    log(f"work directory: {work}  (sides: {', '.join(SIDES)}; {REPS} loopback reps, "
        f"{WAN_REPS} WAN reps; Vesalius content_encoding={ENCODING})")
    synth = work / "synth"
    synth.mkdir()
    files = B.synthesize(synth)
    ct_dir = files[0].parent
    n = len(files)
    total = sum(f.stat().st_size for f in files)
    study_uid = B.study_keys(files[0])["study_uid"]
    log(f"data: {n} files, {total / 1e6:.1f} MB, study {study_uid}")

    R = {s: {"lag_all": [], "lag_complete": [], "e2e": [], "alone": []} for s in SIDES}
    CPU = {"forward": [], "alone": []}
    for rep in range(REPS):
        for side in SIDES:
            alone = run_alone(work, side, rep, ct_dir)
            if side == "vesalius":
                r = run_vesalius(work, rep, ct_dir, study_uid, n)
            else:
                r = run_orthanc(work, rep, ct_dir, n)
            R[side]["alone"].append(alone)
            R[side]["lag_all"].append(r["all_in"] - r["last"])
            R[side]["lag_complete"].append(r["complete"] - r["last"])
            R[side]["e2e"].append(r["complete"] - r["t0"])
            if side == "vesalius":
                CPU["forward"].append(r["cpu"])
                CPU["alone"].append(ALONE_CPU[-1])
            log(f"  rep {rep + 1}/{REPS} {side:8}: ingest alone {alone:.2f} s, sent in "
                f"{r['last'] - r['t0']:.2f} s, lag all-in {r['all_in'] - r['last']:.3f} s, "
                f"lag complete {r['complete'] - r['last']:.3f} s, end to end {r['complete'] - r['t0']:.2f} s")

    W = {s: [] for s in SIDES}
    proxy = netproxy_script(work) if WAN_REPS else None
    if WAN_REPS and not proxy:
        log("no tests/tools/netproxy.py (nor on branch faults): WAN stage skipped")
    raw_s = total * 8 / (WAN_MBIT * 1e6)
    if proxy:
        for rep in range(WAN_REPS):
            for side in SIDES:
                if side == "vesalius":
                    r = run_vesalius(work, f"wan-{rep}", ct_dir, study_uid, n, proxy)
                else:
                    r = run_orthanc(work, f"wan-{rep}", ct_dir, n, proxy)
                W[side].append(r)
                wire = r.get("wire_bytes")
                log(f"  WAN rep {rep + 1}/{WAN_REPS} {side:8}: complete at the hub "
                    f"{r['complete'] - r['t0']:.2f} s after the first C-STORE "
                    f"({r['complete'] - r['last']:.2f} s after the last); raw bytes need {raw_s:.2f} s"
                    + (f"; {wire / 1e6:.1f} MB crossed the link" if wire else ""))

    # ---- report
    m = B.machine()
    lines = []
    lines.append(f"Exchange: {n}-slice CT ({total / 1e6:.1f} MB) by storescu into a spoke, forwarded to a hub; "
                 f"{REPS} repetitions (p50 / p95)")
    head = f"{'':44} {'Vesalius':>20} {'Orthanc':>20} {'Ratio O/V':>10}"
    lines.append(head)

    def row(label, key):
        cells = []
        for s in ("vesalius", "orthanc"):
            xs = R.get(s, {}).get(key, [])
            cells.append(f"{fmt(pct(xs, 50))} / {fmt(pct(xs, 95))}" if xs else "—")
        ratio = "—"
        if "vesalius" in R and "orthanc" in R and R["vesalius"][key] and R["orthanc"][key]:
            ratio = f"{pct(R['orthanc'][key], 95) / max(pct(R['vesalius'][key], 95), 1e-9):.1f}×"
        lines.append(f"{label:44} {cells[0]:>20} {cells[1]:>20} {ratio:>10}")

    row("lag: last C-STORE rsp -> all at hub", "lag_all")
    row("lag: last C-STORE rsp -> study complete", "lag_complete")
    row("end to end: first C-STORE -> complete", "e2e")
    row("spoke's own ingest (no route)", "alone")
    verdict = []
    if "vesalius" in R and R["vesalius"]["e2e"]:
        v = R["vesalius"]
        lag95 = max(pct(v["lag_all"], 95), pct(v["lag_complete"], 95))
        verdict.append(f"Vesalius lag p95 {lag95:.3f} s (target ≤ 0.2 s): {'met' if lag95 <= 0.2 else 'MISSED'}")
        if "orthanc" in R and R["orthanc"]["lag_all"]:
            f = pct(R["orthanc"]["lag_all"], 95) / max(lag95, 1e-9)
            verdict.append(f"Orthanc lag p95 / Vesalius lag p95 = {f:.1f}× (target ≥ 3×): "
                           f"{'met' if f >= 3 else 'MISSED'}")
        e = pct(v["e2e"], 50) / pct(v["alone"], 50)
        e95 = pct(v["e2e"], 95) / pct(v["alone"], 50)
        verdict.append(f"Vesalius end to end / own ingest = {e:.2f}× p50, {e95:.2f}× p95 (target ≤ 1.2×): "
                       f"{'met' if e <= 1.2 else 'MISSED'}")
    lines.extend(verdict)
    if CPU["forward"]:
        # Where the time goes on this machine: the CPU seconds of every process against the
        # cores there are. End to end cannot be shorter than their sum over the cores.
        med = lambda rows, k: B.median([r[k] for r in rows])  # noqa: E731
        f, a = CPU["forward"], CPU["alone"]
        tot_f = B.median([r["spoke"] + r["hub"] + r["storescu"] for r in f])
        tot_a = B.median([r["spoke"] + r["storescu"] for r in a])
        cores = os.cpu_count() or 1
        lines.append(f"Vesalius CPU seconds (median), forwarding: spoke {med(f, 'spoke'):.2f} + hub {med(f, 'hub'):.2f}"
                     f" + storescu {med(f, 'storescu'):.2f} = {tot_f:.2f} s (≥ {tot_f / cores:.2f} s of wall time on {cores} cores);"
                     f" alone: spoke {med(a, 'spoke'):.2f} + storescu {med(a, 'storescu'):.2f} = {tot_a:.2f} s")
    if any(W.values()):
        lines.append(f"WAN ({WAN_DELAY_MS} ms each way, {WAN_MBIT} Mbit/s; netproxy), {WAN_REPS} repetitions: "
                     f"raw bytes need {raw_s:.2f} s")
        for s in SIDES:
            if not W[s]:
                continue
            e2e = [r["complete"] - r["t0"] for r in W[s]]
            wire = [r["wire_bytes"] for r in W[s] if r.get("wire_bytes")]
            lines.append(f"  {s:9} complete at the hub after {B.median(e2e):.2f} s (median; "
                         f"{', '.join(f'{x:.2f}' for x in e2e)}), {B.median(e2e) / raw_s:.2f}× the raw bytes' time"
                         + (f"; {B.median(wire) / 1e6:.1f} MB on the wire" if wire else ""))
    lines.append(f"machine: {m['nproc']} CPUs ({m['cpu']}), load {' '.join(m['loadavg'])}, {m['fs']}, "
                 f"Orthanc {m['orthanc']}, DCMTK {m['dcmtk']}, Vesalius {m['vesalius_rev']}")
    text = "\n".join(lines)
    log("\n" + text)
    raw = {s: {k: [round(x, 4) for x in v] for k, v in R[s].items()} for s in SIDES}
    (work / "results.json").write_text(json.dumps({"loopback": raw, "cpu": CPU, "wan": {
        s: [{k: v for k, v in r.items()} for r in W[s]] for s in SIDES}}, indent=1))
    if DOC:
        cmd = "".join(f"{k}={os.environ[k]} " for k in sorted(os.environ)
                      if k.startswith("BENCH_") and k != "BENCH_PIDFILE") + "scripts/bench exchange"
        doc = Path(os.environ.get("BENCH_DOC_PATH", ROOT / "docs/benchmarks.md"))
        with open(doc, "a") as f:
            f.write(f"\n### Exchange, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n\n"
                    f"`{cmd}`\n\n```\n{text}\n```\n\nRaw figures (s): `{json.dumps(raw)}`\n")
        log(f"appended to {doc}")
    if not KEEP:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    finally:
        B._cleanup()
        # A failed run leaves no data behind either (the study alone is 158 MB per copy).
        if WORK is not None and not KEEP:
            shutil.rmtree(WORK, ignore_errors=True)
