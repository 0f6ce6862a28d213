"""Issue 5, fault tests, black box: a spoke and a hub (two real `vesalius serve` processes on
loopback) with the test proxy (tests/tools/netproxy.py) between the spoke and the hub's HTTP port.
A CT head is sent into the spoke by DCMTK storescu and routed to the hub.

- Cuts: the proxy cuts every connection after a random 2–8 MB and delays each chunk; the study
  completes at the hub byte-identical, once, with ≤ 1.1× its size sent through the proxy.
- The hub down for a while (`VESALIUS_TEST_HUB_DOWN_S`, default 3 s): the spoke queues and
  delivers when it returns.
- kill -9 of the spoke mid-transfer (with an instance the hub stored but never acknowledged)
  and a restart on the same data directory: the study completes, what the hub held is
  confirmed by manifest and not sent again, nothing is lost.
- A final manifest lost to the link is sent again once the link is back.

Set `VESALIUS_TEST_FIGURES=PATH` to append each test's measured figures as JSON lines."""

import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from conftest import BIN, Server, caller, dcm_files, dcmtk, rejection_note

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from netproxy import ProxyOptions, ThreadedNetProxy  # noqa: E402

HUB, SPOKE = "hub", "spoke"
HUB_ORG, SPOKE_ORG = "csc", "st-marys"
TCP = {**os.environ, "TCP_NODELAY": "1"}
HUB_DOWN_S = float(os.environ.get("VESALIUS_TEST_HUB_DOWN_S", "3"))
# Whole-test deadline for the study to complete once it is sent (the tests stay well under it
# on an idle machine; a loaded 2-core one needs the margin).
DEADLINE_S = 45


def exchange_config(site, lease_ms=60000, settle_ms=50, content_encoding="gzip", extra=""):
    """Short waits: retries after 0.1–1 s, routes reloaded every 0.2 s, never parked."""
    return f"""
[site]
name = "{site}"

[exchange]
content_encoding = "{content_encoding}"
poll_ms = 200
lease_ms = {lease_ms}
backoff_base_ms = 100
backoff_max_ms = 1000
max_attempts = 10000
request_timeout_ms = 20000
route_refresh_ms = 200
settle_ms = {settle_ms}
{extra}"""


def admin(data_dir, site, *args):
    env = {**os.environ, "VESALIUS__SITE__NAME": site}
    p = subprocess.run([BIN, "admin", *args, "--data-dir", str(data_dir)], capture_output=True, text=True,
                       env=env, timeout=60)
    assert p.returncode == 0, f"admin {' '.join(args)}: {p.stdout}\n{p.stderr}"
    return p.stdout


def public_key(data_dir, site):
    return json.loads(admin(data_dir, site, "site", "show", "--json"))["public_key"]


def get(server, path, accept="application/json"):
    req = urllib.request.Request(server.base + path, headers={"Accept": accept})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read()


def get_json(server, path):
    return json.loads(get(server, path) or b"null")


def held(server, study):
    """SOP Instance UID → SHA-256 of the bytes `server` holds of `study`, each instance read
    back by WADO-RS as stored (`transfer-syntax=*`)."""
    try:
        listed = get_json(server, f"/dicom-web/studies/{study}/instances?limit=10000") or []
    except urllib.error.HTTPError as e:
        if e.code in (204, 404):
            return {}
        raise
    out = {}
    for item in listed:
        series, sop = item["0020000E"]["Value"][0], item["00080018"]["Value"][0]
        body = get(server, f"/dicom-web/studies/{study}/series/{series}/instances/{sop}",
                   accept="application/dicom; transfer-syntax=*")
        assert sop not in out, f"{sop} listed twice"
        out[sop] = (hashlib.sha256(body).hexdigest(), len(body))
    return out


def ct_head(out, slices, seed):
    """A CT head of `slices` slices (512 × 512 × 16 bit, ~0.5 MB each): `vesalius synth` writes
    8 (synthesising all of them takes half a minute in a debug build on a loaded machine), and
    the rest are copies of them as further slices of the same series, each with its own SOP
    Instance UID, number and position, and a few pixels changed so no two are alike."""
    subprocess.run([BIN, "synth", "--out", str(out / "synth"), "--seed", str(seed), "--kinds", "ct-head",
                    "--slices", "8"], check=True, capture_output=True, timeout=120)
    base = [pydicom.dcmread(p) for p in dcm_files(out / "synth")]
    base.sort(key=lambda d: int(d.InstanceNumber))
    spacing = float(base[1].ImagePositionPatient[2]) - float(base[0].ImagePositionPatient[2]) or 5.0
    files = []
    for i in range(slices):
        ds = base[i % len(base)].copy()
        uid = generate_uid(prefix="2.25.")
        ds.SOPInstanceUID = uid
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.InstanceNumber = i + 1
        z = float(base[0].ImagePositionPatient[2]) + i * spacing
        ds.ImagePositionPatient = [*base[0].ImagePositionPatient[:2], z]
        if "SliceLocation" in ds:
            ds.SliceLocation = z
        px = bytearray(ds.PixelData)
        px[i * 2 % len(px)] ^= 0x5A
        ds.PixelData = bytes(px)
        path = out / f"ct{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files, str(base[0].StudyInstanceUID)


def keep_log(server):
    """Moves a stopped server's log aside (`NAME.log.1`, …) before it is started again."""
    if server is None or not server.log_path.exists():
        return
    n = 1
    while server.log_path.with_name(f"{server.log_path.name}.{n}").exists():
        n += 1
    server.log_path.rename(server.log_path.with_name(f"{server.log_path.name}.{n}"))


class Network:
    """A hub and a spoke linked through the proxy: the spoke's peer record for the hub points
    at the proxy, and its route sends every CT to the hub at stroke priority."""

    def __init__(self, tmp_path, options, spoke_lease_ms=60000, spoke_settle_ms=50, seed=None,
                 content_encoding="gzip", extra_spoke_config="", hub_callers=()):
        self.hub_dir, self.spoke_dir = tmp_path / "hub", tmp_path / "spoke"
        self.extra_spoke_config = extra_spoke_config
        self.hub_callers = list(hub_callers)
        self.spoke_lease_ms = spoke_lease_ms
        self.spoke_settle_ms = spoke_settle_ms
        self.content_encoding = content_encoding
        admin(self.hub_dir, HUB, "org", "create", HUB_ORG)
        admin(self.spoke_dir, SPOKE, "org", "create", SPOKE_ORG)
        hub_key, spoke_key = public_key(self.hub_dir, HUB), public_key(self.spoke_dir, SPOKE)
        # The hub never calls the spoke here: its URL only has to be a valid loopback one.
        admin(self.hub_dir, HUB, "peer", "add", SPOKE, "--url", "http://127.0.0.1:9", "--public-key", spoke_key,
              "--org", HUB_ORG)
        self.hub = None
        self.spoke = None
        self.proxy = None
        try:
            self.hub = self.start_hub()
            self.proxy = ThreadedNetProxy(("127.0.0.1", self.hub.http_port), options, seed=seed)
            self.proxy.start()
            admin(self.spoke_dir, SPOKE, "peer", "add", HUB, "--url", f"http://127.0.0.1:{self.proxy.port}",
                  "--public-key", hub_key, "--org", SPOKE_ORG)
            admin(self.spoke_dir, SPOKE, "route", "add", "ct-to-hub", "--org", SPOKE_ORG, "--to", f"peer:{HUB}",
                  "--modality", "CT", "--priority", "100")
            self.spoke = self.start_spoke()
        except BaseException:
            self.close()
            raise

    def start_hub(self):
        keep_log(self.hub)
        return Server(self.hub_dir, config_text=exchange_config(HUB), callers=self.hub_callers)

    def start_spoke(self):
        keep_log(self.spoke)
        return Server(self.spoke_dir, config_text=exchange_config(SPOKE, self.spoke_lease_ms, self.spoke_settle_ms,
                                                                  self.content_encoding, self.extra_spoke_config),
                      callers=[caller("STORESCU", org=SPOKE_ORG)])

    def send(self, files):
        """DCMTK storescu into the spoke, as a scanner would."""
        r = subprocess.run([dcmtk("storescu"), "-aet", "STORESCU", "-aec", "VESALIUS", "127.0.0.1",
                            str(self.spoke.dicom_port), *map(str, files)], env=TCP, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]

    def logs(self):
        out = []
        for s in (self.spoke, self.hub):
            if s is not None:
                out.append(f"--- {s.log_path.name}\n{s.log_path.read_text()[-3000:]}")
        return "\n".join(out)

    def wait_complete(self, study, deadline):
        """Waits for the hub's arrival record to be complete and the spoke's study receipt."""
        arrival = None
        while time.time() < deadline:
            arrival = next((a for a in get_json(self.hub, "/api/v1/arrivals?limit=1000")
                            if a["study_uid"] == study), None)
            transfer = next((t for t in get_json(self.spoke, "/api/v1/transfers?limit=1000")
                             if t["study_uid"] == study), None)
            if arrival and arrival["complete_ms"] > 0 and transfer and transfer["complete_ms"] > 0:
                return arrival, transfer
            time.sleep(0.2)
        pytest.fail(f"study not complete at the hub in time: arrival {arrival}, proxy {self.proxy.stats()}\n"
                    + self.logs())

    def check_delivered_once(self, study, n):
        """Every instance at the hub, byte-identical to the spoke's, once, without prior
        versions; the spoke's outbox empty and a verified receipt per instance. Answers the
        study's size in bytes (as stored at the spoke)."""
        at_spoke = held(self.spoke, study)
        at_hub = held(self.hub, study)
        assert len(at_spoke) == n
        assert at_hub == at_spoke, "the hub holds other bytes or other instances than the spoke"
        assert get_json(self.hub, f"/api/v1/studies/{study}/versions") == [], "an instance was replaced"
        assert get_json(self.spoke, "/api/v1/transfers/jobs?limit=1000") == []
        receipts = get_json(self.spoke, f"/api/v1/transfers/receipts?study={study}&limit=10000")
        instance = [r for r in receipts if r["kind"] == "instance"]
        assert {r["sop_instance_uid"] for r in instance} == set(at_spoke)
        assert all(r["verified"] for r in instance)
        assert {r["sop_instance_uid"]: r["sha256"] for r in instance} == {k: v[0] for k, v in at_spoke.items()}
        assert any(r["kind"] == "study" and r["verified"] for r in receipts)
        return sum(size for _, size in at_spoke.values())

    def close(self):
        for s in (self.spoke, self.hub):
            if s is not None:
                s.kill()
        if self.proxy is not None:
            self.proxy.stop()


def figures(name, **values):
    """Prints the measured figures (pytest -s shows them) and appends them to
    $VESALIUS_TEST_FIGURES when set."""
    line = json.dumps({"test": name, **values})
    print(line)
    path = os.environ.get("VESALIUS_TEST_FIGURES")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


@pytest.mark.parametrize("coding", ["identity", "gzip"])
def test_cut_connections_complete_once_within_1_1x_bytes(tmp_path, coding):
    # Plain bodies: the bytes on the link against the study's, as the issue counts them. Gzip
    # (the default): the link carries ~0.6× the study, spread over the pipelined connections,
    # so fewer connections reach their cut point; more slices keep at least three cuts.
    files, study = ct_head(tmp_path, 96 if coding == "identity" else 192, seed=21)
    # 10 ms each way: a slow link by its round trip (`slow_link_rtt_ms`), so 1 MiB requests.
    net = Network(tmp_path, ProxyOptions(cut_min_bytes=2_000_000, cut_max_bytes=8_000_000, delay_ms=10), seed=5,
                  content_encoding=coding)
    try:
        t0 = time.time()
        net.send(files)
        arrival, transfer = net.wait_complete(study, t0 + DEADLINE_S)
        elapsed = time.time() - t0
        size = net.check_delivered_once(study, len(files))
        assert arrival["manifest_instances"] == len(files) and arrival["priority"] == 100
        assert arrival["from_peer"] == SPOKE and arrival["org"] == HUB_ORG
        stats = net.proxy.stats()
        ratio = stats["bytes_client_to_target"] / size
        figures(f"cuts-{coding}", study_bytes=size, sent_bytes=stats["bytes_client_to_target"], ratio=round(ratio, 4),
                cuts=stats["cuts"], connections=stats["connections"], seconds=round(elapsed, 2))
        assert stats["cuts"] >= 3, f"the proxy cut only {stats['cuts']} times: {stats}"
        assert all(2_000_000 <= c <= 8_000_000 for c in stats["cut_points"])
        assert ratio <= 1.1, f"sent {stats['bytes_client_to_target']} bytes for a {size}-byte study ({ratio:.3f}×)"
    finally:
        net.close()


def test_hub_down_the_spoke_queues_and_delivers_when_it_returns(tmp_path):
    files, study = ct_head(tmp_path, 16, seed=22)
    net = Network(tmp_path, ProxyOptions(delay_ms=1))
    try:
        net.hub.stop()
        net.send(files)
        time.sleep(HUB_DOWN_S)
        # Queued: every instance pending at the spoke, retried meanwhile, none delivered.
        transfer = next(t for t in get_json(net.spoke, "/api/v1/transfers?limit=100") if t["study_uid"] == study)
        assert (transfer["pending"], transfer["delivered"], transfer["parked"]) == (len(files), 0, 0), transfer
        jobs = get_json(net.spoke, f"/api/v1/transfers/jobs?study={study}&limit=1000")
        assert len(jobs) == len(files) and any(j["attempts"] > 0 and j["last_error"] for j in jobs), jobs[:2]
        assert net.proxy.stats()["target_refused"] > 0
        t0 = time.time()
        net.hub = net.start_hub()
        net.proxy.retarget(("127.0.0.1", net.hub.http_port))
        net.wait_complete(study, t0 + DEADLINE_S)
        back = time.time() - t0
        size = net.check_delivered_once(study, len(files))
        stats = net.proxy.stats()
        ratio = stats["bytes_client_to_target"] / size
        figures("hub-down", down_s=HUB_DOWN_S, study_bytes=size, sent_bytes=stats["bytes_client_to_target"],
                ratio=round(ratio, 4), complete_after_return_s=round(back, 2))
        assert ratio <= 1.1
    finally:
        net.close()


def test_sender_killed_mid_transfer_completes_after_restart(tmp_path):
    files, study = ct_head(tmp_path, 24, seed=23)
    # A slow link (0.5 MB/s) that holds the hub's answers: the kill lands mid-study whatever
    # the machine's load, with instances the hub stored but the spoke never heard about.
    # (Requests cut midway are the cut test's business.) Short leases: the restarted spoke
    # takes the dead process's jobs over quickly.
    net = Network(tmp_path, ProxyOptions(rate_mbit=4, delay_ms=2, hold_answers=True), spoke_lease_ms=3000)
    try:
        net.send(files)
        deadline = time.time() + DEADLINE_S
        while not held(net.hub, study):
            assert time.time() < deadline, net.logs()
            time.sleep(0.1)
        net.spoke.proc.kill()  # SIGKILL
        net.spoke.proc.wait()
        net.spoke.log.close()
        at_kill = net.proxy.stats()["bytes_client_to_target"]
        # What the dead process's sockets still held drains through the proxy (the kernel sends
        # it before the FIN); the hub gets truncated requests. Then: what does the hub hold?
        net.proxy.set(rate_mbit=None, hold_answers=False)
        while net.proxy.stats()["active"] > 0:
            assert time.time() < deadline, net.proxy.stats()
            time.sleep(0.05)
        drained = net.proxy.stats()["bytes_client_to_target"]
        held_at_kill = held(net.hub, study)
        assert 0 < len(held_at_kill) < len(files), "the kill did not land mid-study"
        t0 = time.time()
        net.spoke = net.start_spoke()
        net.wait_complete(study, t0 + DEADLINE_S)
        size = net.check_delivered_once(study, len(files))
        stats = net.proxy.stats()
        ratio = stats["bytes_client_to_target"] / size
        missing = size - sum(n for _, n in held_at_kill.values())
        after = stats["bytes_client_to_target"] - drained
        figures("kill-spoke", study_bytes=size, sent_bytes=stats["bytes_client_to_target"], ratio=round(ratio, 4),
                sent_before_kill=at_kill, sent_until_drained=drained, held_at_kill=len(held_at_kill),
                missing_bytes_at_kill=missing, sent_after_restart=after,
                complete_after_restart_s=round(time.time() - t0, 2))
        # What the hub held was confirmed by the restarted spoke's manifest, not sent again ...
        receipts = get_json(net.spoke, f"/api/v1/transfers/receipts?study={study}&limit=10000")
        by_manifest = {r["sop_instance_uid"] for r in receipts if r["detail"] == "already held (manifest)"}
        assert by_manifest == set(held_at_kill), (by_manifest, set(held_at_kill))
        # ... and only what it lacked went (2 % for manifests and framing) ...
        assert after <= missing * 1.02 + 20_000, f"sent {after} bytes after the restart for {missing} missing"
        # ... so the whole cost of the kill is what was in flight (at most `concurrency`
        # requests of at most `batch_bytes`, the defaults: 4 × 1 MiB).
        assert stats["bytes_client_to_target"] <= size * 1.02 + 4 * (1 << 20), \
            f"sent {stats['bytes_client_to_target']} bytes for a {size}-byte study ({ratio:.3f}×)"
    finally:
        net.close()


def test_a_final_manifest_lost_to_the_link_is_sent_again(tmp_path):
    """Every instance delivered and verified, then the link fails just when the spoke sends the
    study's final manifest (it waits `settle_ms` after the last instance): the spoke must send
    it again once the link is back, or the hub never learns that the study is complete."""
    files, study = ct_head(tmp_path, 4, seed=24)
    settle_s = 4.0
    net = Network(tmp_path, ProxyOptions(delay_ms=1), spoke_settle_ms=int(settle_s * 1000))
    try:
        t0 = time.time()
        net.send(files)
        while True:
            assert time.time() < t0 + DEADLINE_S, net.logs()
            transfer = next((t for t in get_json(net.spoke, "/api/v1/transfers?limit=100")
                             if t["study_uid"] == study), None)
            if transfer and transfer["verified"] == len(files):
                break
            time.sleep(0.05)
        assert transfer["complete_ms"] == 0, "the final manifest went before the link was cut: settle_ms too short"
        net.proxy.set(down=True)
        before = net.proxy.stats()
        # The final manifest is due settle_ms after the last instance's job; wait until it has
        # been tried (and refused) at least once.
        while True:
            assert time.time() < t0 + DEADLINE_S, "the spoke never sent its final manifest"
            now = net.proxy.stats()
            if now["connections"] + now["cuts"] > before["connections"] + before["cuts"]:
                break
            time.sleep(0.05)
        time.sleep(0.5)
        net.proxy.set(down=False)
        arrival, transfer = net.wait_complete(study, time.time() + 20)
        assert arrival["manifest_instances"] == len(files)
        net.check_delivered_once(study, len(files))
    finally:
        net.close()


def test_auto_coding_compresses_over_a_slow_link_only(tmp_path):
    # `content_encoding = "auto"` (the default): gzip to a peer whose round trip is at least
    # `slow_link_rtt_ms`, plain otherwise. The threshold is raised here so that the Python
    # proxy's own latency and a debug build's signing (~20 ms a ping) on a loaded machine stay
    # well below it: 0 ms added → plain bodies (the link carries at least the study's bytes);
    # 40 ms each way → gzip (the synthetic CT compresses to ~0.6×).
    files, study = ct_head(tmp_path, 16, seed=24)
    for delay_ms, coded in ((0, False), (40, True)):
        case = tmp_path / f"delay{delay_ms}"
        case.mkdir()
        net = Network(case, ProxyOptions(delay_ms=delay_ms), content_encoding="auto",
                      extra_spoke_config="slow_link_rtt_ms = 60\n")
        try:
            t0 = time.time()
            net.send(files)
            net.wait_complete(study, t0 + DEADLINE_S)
            size = net.check_delivered_once(study, len(files))
            ratio = net.proxy.stats()["bytes_client_to_target"] / size
            figures(f"auto-coding-delay-{delay_ms}ms", study_bytes=size, ratio=round(ratio, 4))
            log = net.spoke.log_path.read_text()
            if coded:
                assert ratio < 0.8, f"{ratio:.3f}× of the study crossed a slow link: not compressed"
                assert "slow link to this peer" in log
            else:
                assert ratio >= 1.0, f"{ratio:.3f}× of the study crossed a fast link: compressed"
                assert "fast link to this peer" in log
        finally:
            net.close()


def test_a_rejection_note_delivered_by_a_peer_hides_nothing_at_the_hub(tmp_path):
    # IHE IOCM: a rejection note (KO titled 113001) hides what it names where its sender may
    # withdraw things. A peer's deliveries are not such a right: a note a spoke forwards is
    # stored at the hub as a document and the hub's own instance it names stays (before, any
    # spoke could hide any instance of the organisation it delivers into).
    files, study = ct_head(tmp_path, 2, seed=25)
    net = Network(tmp_path, ProxyOptions(), hub_callers=[caller("PACS", org=HUB_ORG)])
    try:
        # The hub's own copy of a CT, from its PACS.
        r = subprocess.run([dcmtk("storescu"), "-aet", "PACS", "-aec", "VESALIUS", "127.0.0.1",
                            str(net.hub.dicom_port), *map(str, files)], env=TCP, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        before = held(net.hub, study)
        assert len(before) == 2
        # The spoke forwards KO documents too; a note naming the hub's first instance.
        admin(net.spoke_dir, SPOKE, "route", "add", "ko-to-hub", "--org", SPOKE_ORG, "--to", f"peer:{HUB}",
              "--modality", "KO")
        time.sleep(0.5)  # routes reload every 0.2 s
        note = rejection_note(files[0], tmp_path / "note.dcm")
        t0 = time.time()
        net.send([tmp_path / "note.dcm"])
        net.wait_complete(str(note.StudyInstanceUID), t0 + DEADLINE_S)
        assert set(held(net.hub, str(note.StudyInstanceUID))) == {str(note.SOPInstanceUID)}
        assert held(net.hub, study) == before, "a peer's rejection note hid an instance at the hub"
    finally:
        net.close()
