#!/usr/bin/env python3
"""Many small objects: haul against restic, and haul builds against each other.

    python3 benches/small.py RUNS COUNT[,COUNT...] NAME=BINARY ... [--restore]

Starts the harness's SeaweedFS (e2e.py's services and ports), writes COUNT
files of 1-16 KiB of incompressible bytes (issue 17's data set), then, for
each count, RUNS rounds (after a warm-up round that is not counted) of:

- a full backup of the local folder into a fresh S3 repository by every
  haul variant (encrypted, as the harness's repositories are);
- `restic backup` of the same folder into a fresh S3 repository
  (restic 0.14, its defaults: packs of at least 4 MiB, encrypted);
- with --restore, a restore of each variant's snapshot into an empty
  bucket (restic restores only to a local folder: not compared).

Each run prints wall time, peak RSS, client CPU and server CPU; each
variant's median closes the count. Example (the command in BENCHMARKS.md):

    python3 benches/small.py 3 20000,100000 packs=target/release/haul loose=/tmp/haul-4fb2485 --restore
"""

import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e  # noqa: E402


def main():
    argv = sys.argv[1:]
    if len(argv) < 3 or argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    runs, counts = int(argv[0]), [int(c) for c in argv[1].split(",")]
    restore = "--restore" in argv
    variants = []
    for v in argv[2:]:
        if v.startswith("--"):
            continue
        name, _, binary = v.partition("=")
        if not os.path.exists(binary):
            raise SystemExit(f"{name}: no binary at {binary}")
        variants.append((name, os.path.abspath(binary)))

    class Args:
        scale, runs, workdir, smoke, haul = 1.0, 1, None, False, None

    b = e2e.Bench(Args())
    b.start()
    env = dict(b.env, RESTIC_PASSWORD="bench-password", RESTIC_CACHE_DIR=os.path.join(b.tmp, "restic-cache"))
    try:
        for n in counts:
            rnd = __import__("random").Random(n)
            sizes = [rnd.randrange(1024, 16 * 1024) for _ in range(n)]
            local = b.make_dir(f"small-{n}", sizes)
            mib = sum(sizes) / 2**20
            e2e.log(f"{n} files, {mib:.0f} MiB")
            res = {}
            for i in range(runs + 1):
                label = "warm-up" if i == 0 else f"run {i}"
                for name, binary in variants:
                    b.args.haul = binary
                    repo = b.bucket("repo")
                    b.run(b.haul("init", f"s3://{repo}"))
                    r = b.timed(b.haul("backup", "--source", f"file://{local}", "--repo", f"s3://{repo}"))
                    report(label, f"{name} backup", r, res, i)
                    if restore:
                        dst = b.bucket("dst")
                        r = b.timed(b.haul("restore", "latest", "--repo", f"s3://{repo}", "--to", f"s3://{dst}"))
                        report(label, f"{name} restore", r, res, i)
                        b.drop(dst)
                    b.drop(repo)
                repo = b.bucket("restic")
                url = f"s3:{b.endpoint}/{repo}"
                b.env, saved = env, b.env
                try:
                    b.run(["restic", "-r", url, "init"])
                    # --no-cache keeps runs independent; --host pins nothing to this machine's name.
                    r = b.timed(["restic", "-r", url, "--no-cache", "backup", "--host", "bench", "-q", local])
                finally:
                    b.env = saved
                report(label, "restic backup", r, res, i)
                b.drop(repo)
            print(f"== {n} files of 1-16 KiB ({mib:.0f} MiB), median of {runs}:")
            for what, rs in res.items():
                med = statistics.median(r[0] for r in rs)
                print(f"   {what:18} {med:6.2f} s ({min(r[0] for r in rs):.2f}-{max(r[0] for r in rs):.2f}), "
                      f"{mib / med:5.1f} MiB/s, peak RSS {max(r[1] for r in rs):4.0f} MiB, "
                      f"CPU {statistics.median(r[3] for r in rs):5.2f} s, "
                      f"server CPU {statistics.median(r[4] for r in rs):5.1f} s", flush=True)
            subprocess.run(["rm", "-rf", local])
    finally:
        b.stop()


def report(label, what, r, res, i):
    print(f"{label} {what}: {r[0]:.2f} s, peak RSS {r[1]:.0f} MiB, CPU {r[3]:.2f} s, "
          f"server CPU {r[4]:.1f} s", flush=True)
    if i > 0:
        res.setdefault(what, []).append(r)


if __name__ == "__main__":
    main()
