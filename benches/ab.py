#!/usr/bin/env python3
"""A/B variants of haul on the cluster-like data set, by hand.

    python3 benches/ab.py RUNS NAME=BINARY[:VAR=VALUE,...] ... [--local] [--raw]

Starts the harness's SeaweedFS (e2e.py's services, ports and data
generator), uploads the cluster-like data set (2 GiB of 1-20 MB objects;
SCALE=0.1 in the environment for a tenth), then runs a full backup with
every variant in turn, RUNS rounds, each into a fresh warmed bucket, and
prints each run and each variant's median wall time, peak RSS, CPU and
server CPU. A variant is a haul binary with optional environment variables,
so two builds, or one build under two settings, run in the same loop:

    python3 benches/ab.py 3 old=/tmp/haul-old new=target/release/haul
    python3 benches/ab.py 3 one=target/release/haul:MALLOC_ARENA_MAX=1 two=target/release/haul:MALLOC_ARENA_MAX=2
    python3 benches/ab.py 3 sealed=target/release/haul plain=target/release/haul:HAUL_KEY_FILE= --raw

Repositories are encrypted with the harness's key file; a variant with
`HAUL_KEY_FILE=` (empty) gets an unencrypted one (--insecure-no-encryption).

--local backs up the local files instead of the source bucket; --raw adds
the raw-client probe (s3probe copy, or upload with --local) as a variant.
The first round is a warm-up and is not counted.
"""

import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e  # noqa: E402


def main():
    argv = sys.argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    runs = int(argv[0])
    local_src, raw = "--local" in argv, "--raw" in argv
    variants = []
    for v in argv[1:]:
        if v.startswith("--"):
            continue
        name, _, rest = v.partition("=")
        binary, _, envs = rest.partition(":")
        if not os.path.exists(binary):
            raise SystemExit(f"{name}: no binary at {binary}")
        variants.append((name, os.path.abspath(binary), dict(kv.split("=", 1) for kv in envs.split(",") if kv)))
    if raw:
        variants.append(("raw", "raw", {}))

    class Args:
        scale = float(os.environ.get("SCALE", "1"))
        runs, workdir, smoke = 1, None, False
        probe = os.path.join(e2e.ROOT, "target", "release", "s3probe")
        probe_parallel = 8
        haul = None

    args = Args()
    b = e2e.Bench(args)
    b.start()
    try:
        local, src, _ = b.cluster_data()
        source = f"file://{local}" if local_src else f"s3://{src}"
        res = {name: [] for name, _, _ in variants}
        base = dict(b.env)
        for i in range(runs + 1):
            for name, binary, env in variants:
                b.env = dict(base, **env)
                if binary == "raw":
                    dst = b.bucket("raw")
                    r = b.probe("upload" if local_src else "copy", local if local_src else src, dst)
                    b.drop(dst)
                else:
                    args.haul = binary
                    r = b.haul_full(source)
                label = "warm-up" if i == 0 else f"run {i}"
                print(f"{label} {name}: {r[0]:.2f} s, peak RSS {r[1]:.0f} MiB, CPU {r[3]:.2f} s, "
                      f"server CPU {r[4]:.1f} s", flush=True)
                if i > 0:
                    res[name].append(r)
        b.env = base
        for name, rs in res.items():
            print(f"== {name}: median {statistics.median(r[0] for r in rs):.2f} s "
                  f"({min(r[0] for r in rs):.2f}-{max(r[0] for r in rs):.2f}), "
                  f"peak RSS {min(r[1] for r in rs):.0f}-{max(r[1] for r in rs):.0f} MiB, "
                  f"CPU {statistics.median(r[3] for r in rs):.2f} s, "
                  f"server CPU {statistics.median(r[4] for r in rs):.1f} s")
    finally:
        b.stop()


if __name__ == "__main__":
    main()
