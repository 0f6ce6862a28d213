#!/usr/bin/env python3
"""A TCP proxy for the tests: cuts connections, adds latency, limits bandwidth, counts bytes.

Written for issue 5's fault tests and benchmark (stdlib only, asyncio). It sits between a
client (a spoke's exchange engine) and a target (the hub) and, per the options:

- **cut**: each accepted connection is closed abruptly, both sides, once a random number of
  bytes in `[cut_min_bytes, cut_max_bytes]` (drawn per connection from a seeded generator) has
  been forwarded client→target. Exactly that many bytes reach the target; the client's side is
  closed with unread data, so it sees a reset.
- **delay**: every chunk is held `delay_ms` in each direction before it is written on. This is
  latency, not serialisation: chunks read meanwhile keep flowing behind it (a pipe, not a
  stop-and-wait link).
- **rate**: a bandwidth limit per direction (`rate_mbit` Mbit/s), shared by every connection
  of that direction, as a link's serialisation: a chunk leaves the "wire" when the link has had
  time to send it, then travels `delay_ms`. Together: a WAN link of 20 ms and 100 Mbit/s is
  `delay_ms=20, rate_mbit=100`.
- **down** and **hold_answers** (from Python, while it runs): refuse every connection, or let
  requests through but hold the target's answers.
- **stats**: bytes client→target and target→client, connections accepted, cuts, refused
  target connections; `NetProxy.stats()` returns them, the CLI writes them as JSON to `--stats`
  every ~200 ms and when it stops (SIGTERM/SIGINT).

Command line (prints `LISTENING <port>` once bound, then serves until SIGTERM/SIGINT):

    python tests/tools/netproxy.py --listen 127.0.0.1:0 --target HOST:PORT \
        [--cut-min-bytes N --cut-max-bytes M] [--delay-ms D] [--rate-mbit R] \
        [--seed S] [--stats PATH]

From Python (a blocking test): `ThreadedNetProxy` runs a `NetProxy` on its own event loop in a
thread; its options can be changed while it runs (`set(...)`, `retarget(...)`), e.g. to slow a
link down or point it at a restarted target.

    with ThreadedNetProxy(("127.0.0.1", hub_port), ProxyOptions(cut_min_bytes=2 << 20,
                                                                cut_max_bytes=8 << 20)) as p:
        ... p.port ... p.stats()["cuts"] ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import random
import signal
import sys
import threading
import time

# Bytes read at a time per direction. Small enough that the delay and rate are smooth (64 KiB
# is 5 ms at 100 Mbit/s), large enough not to cost much CPU on loopback.
CHUNK = 64 * 1024
# Chunks a direction may hold (read, not yet written) before it stops reading: the proxy's
# "in flight" window. 256 × 64 KiB = 16 MiB, far above 20 ms × 100 Mbit/s (250 kB), so the
# proxy never limits a pipelined sender below the emulated link.
QUEUE_CHUNKS = 256
# Credit the rate limit's bucket may hold, in chunks: the burst a link that was idle may send.
BURST_CHUNKS = 2


@dataclasses.dataclass
class ProxyOptions:
    """What the proxy does to the traffic. Zero/None means "not at all"."""

    # Cut each connection after a random number of client→target bytes in [min, max].
    cut_min_bytes: int | None = None
    cut_max_bytes: int | None = None
    # Latency added to every chunk, each direction.
    delay_ms: float = 0.0
    # Bandwidth per direction, shared by all connections; None = unlimited.
    rate_mbit: float | None = None
    # Refuse service: new connections are closed at once and open ones are cut (a target that
    # is unreachable although the proxy listens).
    down: bool = False
    # Hold the answers: target→client bytes are not read while set, so requests reach the
    # target but the client waits for its answers (until cleared, or its own timeout).
    hold_answers: bool = False

    def validate(self):
        if (self.cut_min_bytes is None) != (self.cut_max_bytes is None):
            raise ValueError("cut_min_bytes and cut_max_bytes go together")
        if self.cut_min_bytes is not None and not 0 < self.cut_min_bytes <= self.cut_max_bytes:
            raise ValueError("need 0 < cut_min_bytes <= cut_max_bytes")
        if self.delay_ms < 0:
            raise ValueError("delay_ms must be >= 0")
        if self.rate_mbit is not None and self.rate_mbit <= 0:
            raise ValueError("rate_mbit must be > 0")


class Link:
    """One direction's shared serialisation: a token bucket kept as the time the emulated link
    is free again, at the options' current rate."""

    def __init__(self, options_of):
        self._options_of = options_of
        self._free_at = 0.0

    async def send(self, nbytes):
        rate = self._options_of().rate_mbit
        if not rate:
            return
        now = time.monotonic()
        # The bucket holds up to BURST_CHUNKS chunks of credit, so that a sleep that overran
        # (the event loop is late by a millisecond or so each time) is not lost bandwidth.
        credit = BURST_CHUNKS * CHUNK * 8 / (rate * 1e6)
        start = max(now - credit, self._free_at)
        self._free_at = start + nbytes * 8 / (rate * 1e6)
        wait = self._free_at - now
        if wait > 0:
            await asyncio.sleep(wait)


_CUT = object()  # queue marker: abort the connection after what is before it
_EOF = object()  # queue marker: half-close the writing side


class NetProxy:
    """The proxy on the running event loop: `await start()`, `port`, `stats()`, `await stop()`."""

    def __init__(self, target, options=None, listen=("127.0.0.1", 0), seed=None):
        self.target = tuple(target)
        self.options = options or ProxyOptions()
        self.options.validate()
        self.listen = listen
        self._rng = random.Random(seed)
        self._links = {"up": Link(lambda: self.options), "down": Link(lambda: self.options)}
        self._server = None
        self._conns = set()
        self._stats = {"bytes_client_to_target": 0, "bytes_target_to_client": 0, "connections": 0,
                       "active": 0, "cuts": 0, "target_refused": 0, "cut_points": []}
        self.port = None

    def stats(self):
        """A copy of the counters (`cut_points`: the byte count each cut connection was cut at)."""
        s = dict(self._stats)
        s["cut_points"] = list(s["cut_points"])
        return s

    async def start(self):
        self._server = await asyncio.start_server(self._accept, self.listen[0], self.listen[1])
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self):
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            conn.abort()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def cut_all(self):
        """Abort every open connection now (counted as cuts)."""
        for conn in list(self._conns):
            conn.cut()

    async def _accept(self, creader, cwriter):
        self._stats["connections"] += 1
        opts = self.options
        if opts.down:
            cwriter.transport.abort()
            return
        try:
            treader, twriter = await asyncio.open_connection(*self.target)
        except OSError:
            self._stats["target_refused"] += 1
            cwriter.transport.abort()
            return
        cut_at = None
        if opts.cut_min_bytes is not None:
            cut_at = self._rng.randint(opts.cut_min_bytes, opts.cut_max_bytes)
        conn = _Connection(self, creader, cwriter, treader, twriter, cut_at)
        self._conns.add(conn)
        self._stats["active"] += 1
        try:
            await conn.run()
        finally:
            self._conns.discard(conn)
            self._stats["active"] -= 1


class _Connection:
    """One client connection and its target connection: two directions, each a reader task
    (reads, pays the link, stamps the due time) and a writer task (waits for it, writes)."""

    def __init__(self, proxy, creader, cwriter, treader, twriter, cut_at):
        self.proxy = proxy
        self.creader, self.cwriter = creader, cwriter
        self.treader, self.twriter = treader, twriter
        self.cut_at = cut_at
        self.up_bytes = 0
        self.closed = False
        self.tasks = []

    async def run(self):
        up_q = asyncio.Queue(QUEUE_CHUNKS)
        down_q = asyncio.Queue(QUEUE_CHUNKS)
        self.tasks = [
            asyncio.create_task(self._read(self.creader, up_q, "up")),
            asyncio.create_task(self._write(self.twriter, up_q, "bytes_client_to_target")),
            asyncio.create_task(self._read(self.treader, down_q, "down")),
            asyncio.create_task(self._write(self.cwriter, down_q, "bytes_target_to_client")),
        ]
        # Done when both writers are done (each after EOF or a cut), or all tasks ended.
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.abort()

    async def _read(self, reader, queue, direction):
        opts_of = lambda: self.proxy.options  # noqa: E731 — read live: options may change
        link = self.proxy._links[direction]
        try:
            while True:
                while direction == "down" and opts_of().hold_answers:
                    await asyncio.sleep(0.005)
                data = await reader.read(CHUNK)
                if not data:
                    await queue.put((0.0, _EOF))
                    return
                if opts_of().down:
                    self.cut()
                    return
                cut_after = False
                if direction == "up" and self.cut_at is not None:
                    left = self.cut_at - self.up_bytes
                    if len(data) >= left:
                        data, cut_after = data[:left], True
                    self.up_bytes += len(data)
                await link.send(len(data))
                due = time.monotonic() + opts_of().delay_ms / 1000.0
                if data:
                    await queue.put((due, data))
                if cut_after:
                    await queue.put((due, _CUT))
                    return
        except (ConnectionError, OSError):
            self.abort()

    async def _write(self, writer, queue, counter):
        try:
            while True:
                due, item = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if item is _EOF:
                    with contextlib.suppress(OSError, RuntimeError):
                        if writer.can_write_eof():
                            writer.write_eof()
                    return
                if item is _CUT:
                    # Let what was forwarded leave our buffer before cutting, so that exactly
                    # cut_at bytes reach the target.
                    with contextlib.suppress(ConnectionError, OSError):
                        await writer.drain()
                        for _ in range(100):
                            if writer.transport.get_write_buffer_size() == 0:
                                break
                            await asyncio.sleep(0.001)
                    self.cut()
                    return
                writer.write(item)
                self.proxy._stats[counter] += len(item)
                await writer.drain()
        except (ConnectionError, OSError):
            self.abort()

    def cut(self):
        if not self.closed:
            self.proxy._stats["cuts"] += 1
            self.proxy._stats["cut_points"].append(self.up_bytes)
        self.abort()

    def abort(self):
        """Close both sides at once, without flushing (an abrupt close)."""
        if self.closed:
            return
        self.closed = True
        for w in (self.cwriter, self.twriter):
            w.transport.abort()
        current = asyncio.current_task()
        for t in self.tasks:
            if t is not current:
                t.cancel()


class ThreadedNetProxy:
    """A `NetProxy` on its own event loop in a daemon thread, for blocking code (pytest).

    `start()` (or `with`) binds and returns the port; `set(**options)` changes the options of
    the running proxy; `retarget((host, port))` sends new connections elsewhere; `cut_all()`
    aborts what is open; `stats()`; `stop()`."""

    def __init__(self, target, options=None, listen=("127.0.0.1", 0), seed=None):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="netproxy")
        self.proxy = NetProxy(target, options, listen, seed)

    def _call(self, coro_or_fn, timeout=10):
        if asyncio.iscoroutine(coro_or_fn):
            return asyncio.run_coroutine_threadsafe(coro_or_fn, self._loop).result(timeout)

        async def wrap():
            return coro_or_fn()
        return asyncio.run_coroutine_threadsafe(wrap(), self._loop).result(timeout)

    @property
    def port(self):
        return self.proxy.port

    def start(self):
        self._thread.start()
        return self._call(self.proxy.start())

    def set(self, **changes):
        opts = dataclasses.replace(self.proxy.options, **changes)
        opts.validate()

        def apply():
            self.proxy.options = opts
        self._call(apply)

    def retarget(self, target):
        def apply():
            self.proxy.target = tuple(target)
        self._call(apply)

    def cut_all(self):
        self._call(self.proxy.cut_all)

    def stats(self):
        return self._call(self.proxy.stats)

    def stop(self):
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self.proxy.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()


def _hostport(text):
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _write_stats(path, stats):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(stats, f)
    os.replace(tmp, path)


async def _main(args):
    options = ProxyOptions(cut_min_bytes=args.cut_min_bytes, cut_max_bytes=args.cut_max_bytes,
                           delay_ms=args.delay_ms, rate_mbit=args.rate_mbit)
    proxy = NetProxy(args.target, options, args.listen, args.seed)
    port = await proxy.start()
    print(f"LISTENING {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        while not stop.is_set():
            if args.stats:
                _write_stats(args.stats, proxy.stats())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)
    finally:
        await proxy.stop()
        if args.stats:
            _write_stats(args.stats, proxy.stats())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", type=_hostport, default=("127.0.0.1", 0), help="HOST:PORT to bind (port 0: any)")
    p.add_argument("--target", type=_hostport, required=True, help="HOST:PORT to forward to")
    p.add_argument("--cut-min-bytes", type=int, help="cut each connection after at least N client→target bytes")
    p.add_argument("--cut-max-bytes", type=int, help="... and at most M")
    p.add_argument("--delay-ms", type=float, default=0.0, help="latency added to every chunk, each direction")
    p.add_argument("--rate-mbit", type=float, help="bandwidth per direction, Mbit/s, shared by all connections")
    p.add_argument("--seed", type=int, help="seed for the cut points")
    p.add_argument("--stats", help="write the counters as JSON here every ~200 ms and at exit")
    args = p.parse_args(argv)
    try:
        ProxyOptions(args.cut_min_bytes, args.cut_max_bytes, args.delay_ms, args.rate_mbit).validate()
    except ValueError as e:
        p.error(str(e))
    asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
