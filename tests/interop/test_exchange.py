"""Issue 5, black box: the exchange network with real processes and real third-party peers.

- `vesalius demo` (three sites in one process) carries a CT head from a spoke to the hub.
- A route to a legacy DICOM node: DCMTK `storescp` receives what DCMTK `storescu` sent into
  Vesalius, forwarded by the transfer engine's C-STORE SCU, with the data set unchanged.
"""

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN, Server, dcm_files, dcmtk

TCP = {**os.environ, "TCP_NODELAY": "1"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def data_set(path):
    """The data set bytes of a Part 10 file: after the preamble, DICM and the meta group, whose
    length is its first element (PS3.10 7.1)."""
    b = Path(path).read_bytes()
    assert b[128:132] == b"DICM"
    assert b[132:136] == b"\x02\x00\x00\x00" and b[136:138] == b"UL"
    return b[144 + int.from_bytes(b[140:144], "little"):]


def admin(data_dir, *args):
    return subprocess.run([BIN, "admin", *args, "--data-dir", str(data_dir)], capture_output=True, text=True,
                          timeout=60)


def test_demo_carries_a_ct_head_from_a_spoke_to_the_hub(tmp_path):
    r = subprocess.run([BIN, "demo", "--dir", str(tmp_path / "demo"), "--slices", "16", "--exit", "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    figures = json.loads(r.stdout)
    assert figures["instances"] == 16
    assert figures["study_uid"].startswith("2.25.")
    assert 0 <= figures["lag_s"] <= figures["end_to_end_s"]
    # Each site kept its own data directory and key.
    for site in ("hub", "spoke-a", "spoke-b"):
        assert (tmp_path / "demo" / site / "index.db").exists()
        assert (tmp_path / "demo" / site / "site.key").exists()


def test_route_to_a_dcmtk_storescp_node(tmp_path, synth_dir):
    # The synthetic CT head: the series with the most files.
    by_dir = {}
    for p in dcm_files(synth_dir):
        by_dir.setdefault(p.parent, []).append(p)
    ct = max(by_dir.values(), key=len)[:6]
    port = free_port()
    out = tmp_path / "pacs"
    out.mkdir()
    scp = subprocess.Popen([dcmtk("storescp"), "-aet", "PACS", "-od", str(out), str(port)], env=TCP,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    server = Server(tmp_path / "data", extra_env={"VESALIUS__EXCHANGE__ROUTE_REFRESH_MS": "200",
                                                  "VESALIUS__EXCHANGE__POLL_MS": "200"})
    try:
        r = admin(server.data_dir, "node", "add", "pacs", "--ae-title", "PACS", "--host", "127.0.0.1",
                  "--port", str(port), "--org", "default")
        assert r.returncode == 0, r.stderr
        r = admin(server.data_dir, "route", "add", "ct-to-pacs", "--org", "default", "--to", "node:pacs",
                  "--modality", "CT")
        assert r.returncode == 0, r.stderr
        # A route to a node that does not exist is refused.
        r = admin(server.data_dir, "route", "add", "bad", "--org", "default", "--to", "node:nowhere")
        assert r.returncode != 0
        time.sleep(1.0)  # the server reloads routes every 200 ms here
        r = subprocess.run([dcmtk("storescu"), "-aet", "STORESCU", "-aec", "VESALIUS", "127.0.0.1",
                            str(server.dicom_port), *map(str, ct)], env=TCP, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr
        deadline = time.time() + 60
        while time.time() < deadline and len(list(out.iterdir())) < len(ct):
            time.sleep(0.2)
        received = sorted(out.iterdir())
        assert len(received) == len(ct), server.log_path.read_text()[-3000:]
        sent = sorted(data_set(p) for p in ct)
        assert sorted(data_set(p) for p in received) == sent
    finally:
        server.kill()
        scp.kill()
        scp.wait()
