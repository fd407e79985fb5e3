#!/usr/bin/env python3
"""Prune at scale: haul against restic, on a repository of N small chunks.

    python3 benches/prune.py [--files 1000000] [--haul target/release/haul] [--no-restic]

Starts the harness's SeaweedFS (e2e.py's services), writes N files of
200-700 incompressible bytes, and for haul and for restic (0.14, into S3
as well, its defaults):

1. backs the folder up (snapshot 1: N chunks, packed);
2. deletes every other file and writes N/2 new ones, backs up again
   (snapshot 2);
3. forgets snapshot 1 and prunes: N/2 chunks are unreferenced, spread
   evenly over the packs, so most packs are repacked — the heavy case.
   haul: `haul forget ID` then `haul prune --grace 0` (mark and sweep in
   one run); restic: `restic forget ID --prune` (its default: repack
   until at most 5% is unused);
4. prunes again with nothing to delete (the cost of looking).

Reports wall time, peak RSS and CPU of each prune, and the repository's
size before and after.
"""

import argparse
import json
import os
import random
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e  # noqa: E402


def write_files(d, names, seed):
    rnd = random.Random(seed)
    for name in names:
        p = os.path.join(d, name)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(os.urandom(200 + rnd.randrange(500)))


def bucket_bytes(b, bucket):
    out = b.run([b.rclone, "--config", "/dev/null", "size", "--json", f"src:{bucket}"])
    return json.loads(out)["bytes"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--haul", default=os.path.join(e2e.ROOT, "target", "release", "haul"))
    ap.add_argument("--no-restic", action="store_true")
    args = ap.parse_args()

    class Args:
        scale, runs, workdir, smoke, haul = 1.0, 1, None, False, args.haul

    b = e2e.Bench(Args())
    b.start()
    n = args.files
    try:
        src = os.path.join(b.tmp, "prune-src")
        first = [f"d{i % 256:02x}/f{i:08d}" for i in range(n)]
        write_files(src, first, 1)
        e2e.log(f"{n} files written")
        rows = []

        def second_state():
            for name in first[::2]:
                os.remove(os.path.join(src, name))
            write_files(src, [f"e{i % 256:02x}/g{i:08d}" for i in range(n // 2)], 2)

        def first_state():
            shutil.rmtree(src)
            write_files(src, first, 1)

        # haul
        repo = b.bucket("haul-prune")
        url = f"s3://{repo}"
        b.run(b.haul("init", url))
        r = b.timed(b.haul("backup", "--source", f"file://{src}", "--repo", url))
        s1 = json.loads(r[2])["snapshot"]
        e2e.log(f"haul backup 1: {r[0]:.1f} s")
        second_state()
        r = b.timed(b.haul("backup", "--source", f"file://{src}", "--repo", url))
        e2e.log(f"haul backup 2: {r[0]:.1f} s")
        b.run(b.haul("forget", "--repo", url, s1))
        before = bucket_bytes(b, repo)
        r = b.timed(b.haul("prune", "--repo", url, "--grace", "0"))
        after = bucket_bytes(b, repo)
        rep = json.loads(r[2])
        e2e.log(f"haul prune: {r[0]:.1f} s, {r[1]:.0f} MiB; {rep}")
        rows.append(("haul prune --grace 0", r, before, after, rep["chunks_deleted"]))
        r = b.timed(b.haul("prune", "--repo", url, "--grace", "0"))
        rows.append(("haul prune (nothing to do)", r, after, bucket_bytes(b, repo), 0))
        b.drop(repo)

        if not args.no_restic:
            first_state()
            env = dict(b.env, RESTIC_PASSWORD="bench-password",
                       RESTIC_CACHE_DIR=os.path.join(b.tmp, "restic-cache"))
            repo = b.bucket("restic-prune")
            rurl = f"s3:{b.endpoint}/{repo}"
            b.env, saved = env, b.env
            try:
                b.run(["restic", "-r", rurl, "init"])
                r = b.timed(["restic", "-r", rurl, "--json", "backup", "--host", "bench", "-q", src])
                sid = [json.loads(line) for line in r[2].splitlines() if '"summary"' in line][-1]["snapshot_id"]
                e2e.log(f"restic backup 1: {r[0]:.1f} s")
                second_state()
                r = b.timed(["restic", "-r", rurl, "backup", "--host", "bench", "-q", src])
                e2e.log(f"restic backup 2: {r[0]:.1f} s")
                before = bucket_bytes(b, repo)
                r = b.timed(["restic", "-r", rurl, "forget", sid, "--prune"])
                after = bucket_bytes(b, repo)
                rows.append(("restic forget --prune", r, before, after, None))
                r = b.timed(["restic", "-r", rurl, "prune"])
                rows.append(("restic prune (nothing to do)", r, after, bucket_bytes(b, repo), None))
            finally:
                b.env = saved
            b.drop(repo)

        print(f"== prune of {n} chunks, half unreferenced (S3, SeaweedFS):")
        print("| tool | wall s | peak RSS MiB | CPU s | repository before → after | chunks deleted |")
        print("|---|---:|---:|---:|---:|---:|")
        for what, r, before, after, deleted in rows:
            print(f"| {what} | {r[0]:.1f} | {r[1]:.0f} | {r[3]:.1f} | {before / 2**20:.0f} → {after / 2**20:.0f} MiB | "
                  f"{'' if deleted is None else deleted} |")
    finally:
        b.stop()


if __name__ == "__main__":
    main()
