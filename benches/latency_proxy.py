#!/usr/bin/env python3
"""A loopback TCP proxy that adds a fixed delay to every request.

    python3 benches/latency_proxy.py --listen 28400 --upstream 28333 --delay-ms 50

makes 127.0.0.1:28400 an S3 endpoint 50 ms "further away" than
127.0.0.1:28333: haul, rclone or anything else pointed at it pays 50 ms per
request, as it would against a store one 50 ms round trip away.

What it models, and what not. Each connection carries HTTP/1.1 requests one
after another (S3 clients do not pipeline). The proxy holds the first bytes
of each request for the delay before forwarding them: the first bytes on a
fresh connection, and the first client bytes after the server has started
answering the previous request. The rest of a request (its body, sent
without waiting for an answer) and every response byte pass at once. So every
request costs one extra round trip of `--delay-ms`, which is what limits a
client that issues many small requests (listings, HEADs, small GETs and
PUTs): its requests-in-flight divided by the delay. Not modelled: the TCP
handshake (connections are cheap here, whereas a real 50 ms link charges one
round trip to open one, more with TLS), bandwidth, and TCP's slow start, so
large transfers are not slowed the way a real long link would slow them. A
request that waits for `100 Continue` pays the delay twice, as it would.

Faults, for the tests of haul's retries (`--fault KIND:MATCH:COUNT`,
repeatable): the first COUNT requests whose request line contains MATCH
get KIND instead of their answer:
  stall  the answer never comes (the server's bytes are dropped) until the
         client gives up and closes the connection;
  cut    the answer is cut off after its first 300 bytes (headers and the
         start of the body) and the connection closed, as a dropped link
         would.
Faulted requests are printed on stderr.

Loopback only: both addresses must be loopback; it refuses anything else.
Stops cleanly on SIGINT or SIGTERM (closes the listener and every
connection). Prints "ready PORT" on stdout once it listens (with --listen 0,
the port the kernel chose).
"""

import argparse
import asyncio
import ipaddress
import signal
import socket
import sys


def loopback(host):
    """`host` if it names a loopback address; raises otherwise."""
    try:
        addrs = {ai[4][0] for ai in socket.getaddrinfo(host, None)}
    except socket.gaierror as e:
        raise SystemExit(f"latency_proxy: cannot resolve {host!r}: {e}")
    if not addrs or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs):
        raise SystemExit(f"latency_proxy: {host!r} is not a loopback address ({', '.join(sorted(addrs))})")
    return host


CUT_AFTER = 300


class Proxy:
    def __init__(self, upstream_host, upstream_port, delay_s, faults=()):
        self.upstream = (upstream_host, upstream_port)
        self.delay = delay_s
        self.conns = set()
        self.requests = 0  # requests delayed so far (first bytes of each)
        # [kind, match, remaining]
        self.faults = [list(f) for f in faults]

    def fault_for(self, data):
        """The fault this request gets, if any (and one fewer left)."""
        line = data.split(b"\r\n", 1)[0].decode("latin-1")
        for f in self.faults:
            if f[2] > 0 and f[1] in line:
                f[2] -= 1
                print(f"latency_proxy: {f[0]}: {line}", file=sys.stderr, flush=True)
                return f[0]
        return None

    async def handle(self, c_reader, c_writer):
        task = asyncio.current_task()
        self.conns.add(task)
        s_writer = None
        try:
            s_reader, s_writer = await asyncio.open_connection(*self.upstream)
            # True when the next client bytes start a new request: on a
            # fresh connection, and once the server has answered.
            state = {"new_request": True}
            up = asyncio.create_task(self.client_to_server(c_reader, s_writer, state))
            down = asyncio.create_task(self.server_to_client(s_reader, c_writer, state))
            try:
                await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
                # One side closed: let the other drain what is already sent
                # (the client's EOF after its last request, say), then stop.
                await asyncio.wait({up, down}, timeout=5)
            finally:
                for t in (up, down):
                    t.cancel()
                await asyncio.gather(up, down, return_exceptions=True)
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            for w in (c_writer, s_writer):
                if w is not None:
                    w.close()
            self.conns.discard(task)

    async def client_to_server(self, reader, writer, state):
        while True:
            data = await reader.read(1 << 16)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            if state["new_request"]:
                state["new_request"] = False
                self.requests += 1
                state["fault"] = self.fault_for(data)
                state["sent"] = 0
                await asyncio.sleep(self.delay)
            writer.write(data)
            await writer.drain()

    async def server_to_client(self, reader, writer, state):
        while True:
            data = await reader.read(1 << 16)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            fault = state.get("fault")
            if fault == "stall":
                continue
            if fault == "cut":
                keep = data[:max(0, CUT_AFTER - state["sent"])]
                state["sent"] += len(keep)
                writer.write(keep)
                await writer.drain()
                if state["sent"] >= CUT_AFTER:
                    writer.transport.abort()
                    return
                continue
            state["new_request"] = True
            writer.write(data)
            await writer.drain()


async def serve(args):
    proxy = Proxy(args.upstream_host, args.upstream, args.delay_ms / 1000.0, args.fault)
    server = await asyncio.start_server(proxy.handle, args.listen_host, args.listen,
                                        reuse_address=True, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(f"ready {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    for t in list(proxy.conns):
        t.cancel()
    await asyncio.gather(*proxy.conns, return_exceptions=True)
    await server.wait_closed()
    print(f"latency_proxy: stopped after {proxy.requests} delayed requests", file=sys.stderr, flush=True)


def fault(spec):
    kind, _, rest = spec.partition(":")
    match, _, count = rest.rpartition(":")
    if kind not in ("stall", "cut") or not match or not count.isdigit():
        raise argparse.ArgumentTypeError(f"{spec!r}: expected stall|cut:MATCH:COUNT")
    return (kind, match, int(count))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listen", type=int, default=0, help="port to listen on (0: any free port)")
    ap.add_argument("--listen-host", default="127.0.0.1")
    ap.add_argument("--upstream", type=int, required=True, help="the S3 server's port")
    ap.add_argument("--upstream-host", default="127.0.0.1")
    ap.add_argument("--delay-ms", type=float, default=50.0, help="added to every request (default 50)")
    ap.add_argument("--fault", type=fault, action="append", default=[],
                    help="KIND:MATCH:COUNT, KIND stall or cut (see above); repeatable")
    args = ap.parse_args()
    loopback(args.listen_host)
    loopback(args.upstream_host)
    if args.delay_ms < 0:
        raise SystemExit("latency_proxy: --delay-ms must be >= 0")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
