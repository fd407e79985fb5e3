#!/usr/bin/env python3
"""Shards (issue 19): one bucket backed up by 1, 2 and 4 local shards.

One command:  python3 benches/shards.py --haul target/release/haul      (~15 min)
              python3 benches/shards.py --smoke --haul target/debug/haul (tiny: proves the harness runs)

Two data sets in its own SeaweedFS (scripts/services.sh on ports of its
own), each backed up into fresh repositories:
  bytes    --large objects of 64-192 KiB of incompressible bytes (~1 GB)
  objects  --small objects of 0.5-1.5 KiB (listing and per-object costs)
For each, and each shard count (1 = a plain `haul backup`, N > 1 =
`haul backup --shards N`, local executor: N child processes of this
machine), in rotating order: a full backup into a new repository, then a
backup with nothing changed. Reported: wall time, haul's CPU seconds (the
coordinator and its shards: /usr/bin/time counts waited-for children), the
largest process's peak RSS, and the CPU seconds SeaweedFS spent (it shares
the machine's cores). Every backup's object count is checked.

On a 2-core machine the shards compete with each other and with the server
for the same cores: this measures the overhead and correctness of
sharding, not its speed-up, which needs one machine (or pod) per shard;
BENCHMARKS.md models that.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e  # noqa: E402

MIB = e2e.MIB

e2e.SERVICES_ENV = {
    "HAUL_S3_PORT": "48333",
    "HAUL_PG_PORT": "59432",
    "HAUL_PG_CLUSTER": "haulshards",
    "HAUL_ALT_STORES": "0",
    "HAUL_SERVICES_DIR": "/tmp/haul-shards-services",
}


def log(msg):
    print(f"[shards] {msg}", file=sys.stderr, flush=True)


class Shards(e2e.Bench):
    def backup(self, src, repo, n):
        cmd = self.haul("backup", "--source", f"s3://{src}", "--repo", f"s3://{repo}")
        if n > 1:
            cmd += ["--shards", str(n)]
        dt, rss, out, cpu, srv = self.timed(cmd)
        return dt, rss, json.loads(out), cpu, srv

    def dataset(self, name, count, lo, hi):
        rnd = e2e.random.Random(name)
        sizes = [rnd.randrange(lo, hi) for _ in range(count)]
        local = self.make_dir(name, sizes)
        src = self.bucket(f"src-{name}")
        self.upload(local, src)
        e2e.shutil.rmtree(local)
        log(f"{name}: {count} objects, {sum(sizes) / MIB:.0f} MiB uploaded")
        return src, count, sum(sizes)

    def measure(self, name, src, count, nbytes):
        counts = [1, 2, 4]
        runs = {n: {"full": [], "nochange": []} for n in counts}
        for r in range(self.args.runs):
            order = counts[r % len(counts):] + counts[:r % len(counts)]
            for n in order:
                repo = self.bucket(f"repo-{name}-{n}")
                self.run(self.haul("init", f"s3://{repo}"))
                for kind in ("full", "nochange"):
                    dt, rss, rep, cpu, srv = self.backup(src, repo, n)
                    if rep["objects"] != count:
                        raise SystemExit(f"{name} x{n}: {rep['objects']} objects backed up, not {count}")
                    runs[n][kind].append((dt, rss, cpu, srv))
                    log(f"{name} {kind} shards={n}: {dt:.1f}s, haul CPU {cpu:.1f}s, server CPU {srv:.1f}s, "
                        f"peak {rss:.0f} MiB")
                self.drop(repo)
        for n in counts:
            for kind in ("full", "nochange"):
                rs = runs[n][kind]
                self.rows.append({
                    "data": name, "objects": count, "bytes": nbytes, "shards": n, "backup": kind,
                    "seconds": statistics.median(r[0] for r in rs),
                    "range": [min(r[0] for r in rs), max(r[0] for r in rs)],
                    "rss_mib": max(r[1] for r in rs),
                    "cpu_s": statistics.median(r[2] for r in rs),
                    "server_cpu_s": statistics.median(r[3] for r in rs),
                    "runs": len(rs),
                })

    def table(self):
        lines = ["| data | backup | shards | seconds, median (range) | vs 1 shard | haul CPU s | server CPU s | peak RSS MiB |",
                 "|---|---|---:|---:|---:|---:|---:|---:|"]
        base = {(r["data"], r["backup"]): r["seconds"] for r in self.rows if r["shards"] == 1}
        for r in self.rows:
            lines.append(
                f"| {r['data']} ({r['objects']:,} objects, {r['bytes'] / MIB:,.0f} MiB) | {r['backup']} | {r['shards']} "
                f"| {r['seconds']:.2f} ({r['range'][0]:.2f}-{r['range'][1]:.2f}) "
                f"| {r['seconds'] / base[(r['data'], r['backup'])]:.2f}x | {r['cpu_s']:.1f} | {r['server_cpu_s']:.1f} "
                f"| {r['rss_mib']:.0f} |")
        return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--haul", default=os.path.join(e2e.ROOT, "target", "release", "haul"))
    ap.add_argument("--smoke", action="store_true", help="tiny data, one run")
    ap.add_argument("--runs", type=int, default=2, help="runs per shard count (median reported)")
    ap.add_argument("--large", type=int, default=8000, help="objects of the `bytes` data set")
    ap.add_argument("--small", type=int, default=100_000, help="objects of the `objects` data set")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json-out")
    args = ap.parse_args()
    if args.smoke:
        args.large, args.small, args.runs = 40, 1500, 1
    b = Shards(args)
    b.rows = []
    try:
        b.start()
        for name, count, lo, hi in (("bytes", args.large, 64 << 10, 192 << 10),
                                    ("objects", args.small, 512, 1536)):
            src, n, nbytes = b.dataset(name, count, lo, hi)
            b.measure(name, src, n, nbytes)
    finally:
        b.stop()
    print(b.table())
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(b.rows, f, indent=2)


if __name__ == "__main__":
    main()
