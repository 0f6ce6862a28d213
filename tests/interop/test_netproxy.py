"""The fault-injecting TCP proxy of tests/tools/netproxy.py (issue 5's fault tests and
benchmark rely on it): it forwards bytes unchanged, cuts where it says, delays and limits as told."""

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"
sys.path.insert(0, str(TOOLS))
from netproxy import ProxyOptions, ThreadedNetProxy  # noqa: E402


class Target:
    """A TCP server on 127.0.0.1:0. Mode `echo` sends back what it reads; mode `sink` records
    what each connection received (`received`, one bytes object per closed connection)."""

    def __init__(self, mode):
        self.mode = mode
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.received = []
        self.lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        got = bytearray()
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                got += data
                if self.mode == "echo":
                    conn.sendall(data)
        except OSError:
            pass
        finally:
            with self.lock:
                self.received.append(bytes(got))
            if self.mode == "echo":
                try:
                    conn.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
            conn.close()

    def close(self):
        self.sock.close()


def exchange(port, payload, chunk=256 * 1024):
    """Send payload through a new connection while reading the answer; return what came back
    and whether the connection broke."""
    s = socket.create_connection(("127.0.0.1", port))
    back = bytearray()
    broke = [False]

    def reader():
        try:
            while True:
                d = s.recv(65536)
                if not d:
                    return
                back.extend(d)
        except OSError:
            broke[0] = True

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        for i in range(0, len(payload), chunk):
            s.sendall(payload[i:i + chunk])
        s.shutdown(socket.SHUT_WR)
    except OSError:
        broke[0] = True
    t.join(30)
    s.close()
    return bytes(back), broke[0]


def test_forwards_both_ways_unchanged():
    target = Target("echo")
    payload = os.urandom(5 << 20)
    with ThreadedNetProxy(("127.0.0.1", target.port)) as proxy:
        back, broke = exchange(proxy.port, payload)
        assert not broke
        assert hashlib.sha256(back).digest() == hashlib.sha256(payload).digest()
        # Several connections at once.
        results = [None] * 4
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, exchange(proxy.port, payload[:1 << 20])))
                   for i in range(4)]
        [t.start() for t in threads]
        [t.join(30) for t in threads]
        assert all(r == (payload[:1 << 20], False) for r in results)
        stats = proxy.stats()
    assert stats["bytes_client_to_target"] == len(payload) + 4 * (1 << 20)
    assert stats["bytes_target_to_client"] == len(payload) + 4 * (1 << 20)
    assert stats["connections"] == 5 and stats["cuts"] == 0
    target.close()


def test_cuts_each_connection_within_bounds():
    target = Target("sink")
    lo, hi = 100_000, 300_000
    payload = os.urandom(1 << 20)
    with ThreadedNetProxy(("127.0.0.1", target.port), ProxyOptions(cut_min_bytes=lo, cut_max_bytes=hi),
                          seed=5) as proxy:
        for _ in range(6):
            _, broke = exchange(proxy.port, payload)
            assert broke, "the client must see the connection broken"
        deadline = time.time() + 10
        while len(target.received) < 6 and time.time() < deadline:
            time.sleep(0.05)
        stats = proxy.stats()
    assert stats["cuts"] == 6
    assert all(lo <= n <= hi for n in stats["cut_points"]), stats["cut_points"]
    assert len(set(stats["cut_points"])) > 1, "cut points are drawn per connection"
    # The target got exactly the bytes before each cut point, unchanged.
    assert sorted(len(r) for r in target.received) == sorted(stats["cut_points"])
    assert all(payload.startswith(r) for r in target.received)
    assert stats["bytes_client_to_target"] == sum(stats["cut_points"])
    target.close()


def test_delay_is_latency_not_serialisation():
    target = Target("echo")
    with ThreadedNetProxy(("127.0.0.1", target.port), ProxyOptions(delay_ms=60)) as proxy:
        s = socket.create_connection(("127.0.0.1", proxy.port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t0 = time.monotonic()
        s.sendall(b"ping")
        assert s.recv(16) == b"ping"
        rtt = time.monotonic() - t0
        assert rtt >= 0.115, f"round trip {rtt:.3f} s through 2 × 60 ms"
        # Ten messages sent 10 ms apart: all back after about one round trip plus 90 ms, not
        # ten round trips.
        t0 = time.monotonic()
        for i in range(10):
            s.sendall(b"%02d" % i)
            time.sleep(0.01)
        got = b""
        while len(got) < 20:
            got += s.recv(64)
        elapsed = time.monotonic() - t0
        s.close()
    assert got == b"".join(b"%02d" % i for i in range(10))
    assert 0.2 <= elapsed < 0.9, f"pipelined: {elapsed:.3f} s"
    target.close()


def test_rate_limits_each_direction():
    target = Target("sink")
    payload = os.urandom(2 << 20)
    with ThreadedNetProxy(("127.0.0.1", target.port), ProxyOptions(rate_mbit=40)) as proxy:
        t0 = time.monotonic()
        exchange(proxy.port, payload)
        elapsed = time.monotonic() - t0
        # 2 MiB at 40 Mbit/s: 0.42 s (less two chunks of burst credit).
        assert elapsed >= 0.35, f"{elapsed:.3f} s"
        proxy.set(rate_mbit=None)
        t0 = time.monotonic()
        exchange(proxy.port, payload)
        assert time.monotonic() - t0 < elapsed
    target.close()


def test_down_refuses_and_retarget_follows():
    a, b = Target("echo"), Target("echo")
    with ThreadedNetProxy(("127.0.0.1", a.port)) as proxy:
        assert exchange(proxy.port, b"x" * 10) == (b"x" * 10, False)
        proxy.set(down=True)
        back, _ = exchange(proxy.port, b"y" * 10)
        assert back == b""
        proxy.set(down=False)
        proxy.retarget(("127.0.0.1", b.port))
        assert exchange(proxy.port, b"z" * 10) == (b"z" * 10, False)
    assert a.received[0] == b"x" * 10 and b.received == [b"z" * 10]
    a.close()
    b.close()


def test_hold_answers():
    target = Target("echo")
    with ThreadedNetProxy(("127.0.0.1", target.port), ProxyOptions(hold_answers=True)) as proxy:
        s = socket.create_connection(("127.0.0.1", proxy.port))
        s.sendall(b"request")
        s.settimeout(0.3)
        with pytest.raises(socket.timeout):
            s.recv(16)
        # The request did reach the target.
        assert proxy.stats()["bytes_client_to_target"] == 7
        proxy.set(hold_answers=False)
        s.settimeout(5)
        assert s.recv(16) == b"request"
        s.close()
    target.close()


def test_command_line(tmp_path):
    target = Target("echo")
    stats_path = tmp_path / "stats.json"
    proc = subprocess.Popen([sys.executable, str(TOOLS / "netproxy.py"), "--listen", "127.0.0.1:0",
                             "--target", f"127.0.0.1:{target.port}", "--delay-ms", "1",
                             "--stats", str(stats_path)], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("LISTENING "), line
        port = int(line.split()[1])
        payload = os.urandom(300_000)
        assert exchange(port, payload) == (payload, False)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        stats = json.loads(stats_path.read_text())
        assert stats["bytes_client_to_target"] == len(payload)
        assert stats["bytes_target_to_client"] == len(payload)
        assert stats["connections"] == 1 and stats["cuts"] == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        target.close()


def test_command_line_refuses_half_a_cut_range():
    r = subprocess.run([sys.executable, str(TOOLS / "netproxy.py"), "--target", "127.0.0.1:1",
                        "--cut-min-bytes", "5"], capture_output=True, text=True)
    assert r.returncode == 2 and "go together" in r.stderr
