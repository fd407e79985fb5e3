#!/usr/bin/env python3
"""Refreshing a RUNNING staging cluster from production's snapshot (issue 14):
`haul restore --pause` against the naive procedure, in the same run.

One command:  python3 benches/refresh.py --haul target/release/haul   (2 GB database, 20,000 objects,
                                                  a warm-up and 3 rounds; ~20 min)
              python3 benches/refresh.py --smoke    (tiny, one round: proves the harness runs; ~40 s)
Variants:     --refresh-flags=--drop-previous       (previous databases dropped after the resume)
              --keep-extraneous                     (neither procedure deletes staging's own objects)
              --pg-durable                          (PostgreSQL with fsync on, like a real server)

Production: a bucket of --objects objects of 16-96 KiB of incompressible
bytes, a `pachyderm` database of --db-gb GB (pg_database_size; generated
server-side, text payloads of hex digests in two tables with primary keys)
and a tiny `dex`, backed up once (`haul backup --source --db`).

Staging: production's bucket except --delta-pct percent of its objects, half
missing and half with other bytes of the same size (the worst case: a
same-size object of unknown content is read and hashed), plus 0.25% objects
of its own (extraneous); its own databases. The first round's staging
databases are a tenth of production's size with other rows; later rounds
start from the previous round's result plus rows of staging's own, as a
staging cluster does between refreshes. The delta is put back before every
run, so every run refreshes the same difference.

Each round (after one warm-up round that is reported apart: the first
refresh into a bucket haul has never restored into, so it reads and hashes
all of it, and no `_haul_prev` yet) runs, in alternating order:
  refresh  haul --json restore latest --repo R --to s3://staging --db pachyderm=URL --db dex=URL
               --pause kubectl --context bench --namespace pachyderm --delete-extraneous
  naive    kubectl scale pachd and the workers to 0, wait for their pods;
           haul --json restore latest --repo R --to s3://staging --db ... --clean --delete-extraneous;
           kubectl scale them back: the whole of it is downtime
against the fake cluster of tests/fakes (pods take 0.3 s to stop), and
checks that staging then equals production (rclone check, row counts).

It starts its own SeaweedFS and PostgreSQL (scripts/services.sh on ports of
its own) and reuses benches/e2e.py's helpers.
"""

import argparse
import json
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e  # noqa: E402

MIB = e2e.MIB
ROOT = e2e.ROOT

# Ports and a PostgreSQL cluster of its own: never e2e.py's nor the tests'.
e2e.SERVICES_ENV = {
    "HAUL_S3_PORT": "38333",
    "HAUL_PG_PORT": "58432",
    "HAUL_PG_CLUSTER": "haulrefresh",
    # moto and Azurite are for the tests only.
    "HAUL_ALT_STORES": "0",
    "HAUL_SERVICES_DIR": "/tmp/haul-refresh-services",
}


def log(msg):
    print(f"[refresh] {msg}", file=sys.stderr, flush=True)


class Refresh(e2e.Bench):
    def start(self):
        super().start()
        out = subprocess.run(["bash", f"{ROOT}/scripts/services.sh", "env"], env=dict(os.environ, **e2e.SERVICES_ENV),
                             check=True, capture_output=True, text=True).stdout
        url = next(l.split("=", 1)[1] for l in out.splitlines() if l.startswith("export HAUL_TEST_PG_URL="))
        self.pg_base = url.strip("'\"").rsplit("/", 1)[0]
        # The fake cluster's kubectl first on PATH for every command.
        self.env = self.fake_cluster()
        self.cluster_dir = self.env["FAKE_CLUSTER_DIR"]
        if self.args.pg_durable:
            # The test cluster runs without fsync; a real server's checkpoints
            # (DROP DATABASE waits for one) and commits wait for the disk.
            for setting in ("fsync", "full_page_writes", "synchronous_commit"):
                self.psql("postgres", f"ALTER SYSTEM SET {setting} = on")
            self.psql("postgres", "SELECT pg_reload_conf()")
            time.sleep(1)
            log("PostgreSQL: " + ", ".join(f"{k} {self.psql('postgres', f'SHOW {k}')}"
                                           for k in ("fsync", "full_page_writes", "synchronous_commit")))

    # ------------------------------------------------------- databases ----
    def db_url(self, db):
        return f"{self.pg_base}/{db}"

    def psql(self, db, sql):
        return subprocess.run(["psql", self.db_url(db), "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql], env=self.env,
                              check=True, capture_output=True, text=True).stdout.strip()

    def db_size(self, db):
        return int(self.psql("postgres", f"SELECT coalesce(sum(pg_database_size(datname)), 0) FROM pg_database "
                                         f"WHERE datname = '{db}'"))

    def make_pachyderm(self, db, gb, tag):
        """A `pachyderm`-like database of `gb` GB, generated server-side."""
        self.psql("postgres", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        self.psql("postgres", f"CREATE DATABASE {db}")
        self.psql(db, "CREATE TABLE commits (id bigserial PRIMARY KEY, repo text, branch text, origin int, "
                      "created timestamptz DEFAULT now(), info text);"
                      "CREATE TABLE fileset_entries (id bigserial PRIMARY KEY, path text, hash text, "
                      "size_bytes bigint, info text)")
        # Hex digests: about 2:1 for zstd, like protobuf-in-JSON metadata.
        payload = " || ".join([f"md5('{tag}' || random()::text)"] * 8)
        batch = 2000 if self.args.smoke else 400_000
        t0, i = time.monotonic(), 0
        while (size := self.db_size(db)) < gb * 1e9:
            if i % 2 == 0:
                self.psql(db, f"INSERT INTO commits (repo, branch, origin, info) SELECT '{tag}-repo-' || (g % 97), "
                              f"'master', g % 3, {payload} FROM generate_series(1, {batch}) g")
            else:
                self.psql(db, f"INSERT INTO fileset_entries (path, hash, size_bytes, info) SELECT "
                              f"'/{tag}/' || g || '.json', md5(g::text), g % 100000, {payload} "
                              f"FROM generate_series(1, {batch}) g")
            i += 1
        self.psql(db, "VACUUM ANALYZE")
        log(f"database {db}: {size / 1e9:.2f} GB ({time.monotonic() - t0:.0f}s to generate)")
        return size

    def make_dex(self, db, tag):
        self.psql("postgres", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        self.psql("postgres", f"CREATE DATABASE {db}")
        self.psql(db, "CREATE TABLE keys (id text PRIMARY KEY, signing_key text, next_rotation timestamptz);"
                      f"INSERT INTO keys SELECT '{tag}-k' || g, md5('{tag}' || g), now() FROM generate_series(1, 20) g")

    def counts(self, db):
        tables = self.psql(db, "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables "
                               "WHERE schemaname = 'public'").split(",")
        return {t: int(self.psql(db, f"SELECT count(*) FROM {t}")) for t in tables if t}

    # ----------------------------------------------------------- bucket ----
    def prepare(self):
        a = self.args
        rnd = random.Random(14)
        sizes = [rnd.randrange(16 * 1024, 96 * 1024) for _ in range(a.objects)]
        local = self.make_dir("prod", sizes)
        for b in ("prod", "staging", "repo"):
            self.run([self.rclone, "--config", "/dev/null", "mkdir", f"src:{b}"])
        t0 = time.monotonic()
        self.upload(local, "prod")
        self.upload(local, "staging")
        log(f"buckets: {a.objects} objects, {sum(sizes) / MIB:.0f} MiB, in prod and staging "
            f"({time.monotonic() - t0:.0f}s)")

        # The difference staging has: missing, other bytes (same size), its own.
        names = sorted(os.path.relpath(os.path.join(dp, f), local) for dp, _, fs in os.walk(local) for f in fs)
        k = max(2, round(len(names) * a.delta_pct / 100))
        picked = rnd.sample(names, k)
        self.missing, self.differ = sorted(picked[:k // 2]), sorted(picked[k // 2:])
        n_extra = max(1, len(names) // 400)
        self.delta_dir = os.path.join(self.tmp, "staging-delta")
        for n in self.differ:
            p = os.path.join(self.delta_dir, n)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(os.urandom(os.path.getsize(os.path.join(local, n))))
        extra_bytes = 0
        for i in range(n_extra):
            size = rnd.randrange(16 * 1024, 96 * 1024)
            extra_bytes += size
            with open(os.path.join(self.delta_dir, "chunk", f"stg-{i:06d}"), "wb") as f:
                f.write(os.urandom(size))
        self.missing_list = os.path.join(self.tmp, "missing.txt")
        with open(self.missing_list, "w") as f:
            f.write("\n".join(self.missing) + "\n")
        size_of = lambda n: os.path.getsize(os.path.join(local, n))
        self.bucket_info = {
            "objects": len(names), "bytes": sum(sizes),
            "missing": len(self.missing), "missing_bytes": sum(map(size_of, self.missing)),
            "different": len(self.differ), "different_bytes": sum(map(size_of, self.differ)),
            "extraneous": n_extra, "extraneous_bytes": extra_bytes,
        }
        self.delta_bytes = self.bucket_info["missing_bytes"] + self.bucket_info["different_bytes"]
        shutil.rmtree(local)

        # Production's databases and its snapshot.
        self.prod_db = self.make_pachyderm("prod_pachyderm", a.db_gb, "prod")
        self.make_dex("prod_dex", "prod")
        self.repo = "s3://repo/haul"
        self.run(self.haul("init", self.repo))
        t0 = time.monotonic()
        rep = json.loads(self.run(self.haul("backup", "--source", "s3://prod", "--repo", self.repo,
                                            "--db", f"pachyderm={self.db_url('prod_pachyderm')}",
                                            "--db", f"dex={self.db_url('prod_dex')}")))
        log(f"backup: {time.monotonic() - t0:.0f}s; {json.dumps({k: v for k, v in rep.items() if k != 'phases'})[:600]}")
        self.prod_counts = self.counts("prod_pachyderm")
        self.prod_dex_counts = self.counts("prod_dex")

        # Staging's own databases (the first round's; later rounds start
        # from the previous round's result).
        self.stg_db = self.make_pachyderm("stg_pachyderm", a.db_gb / 10, "stg")
        self.make_dex("stg_dex", "stg")

    def reset(self, round_):
        """Puts staging's difference back: the bucket's delta, rows of its own."""
        self.run(self.rc("delete", "--files-from", self.missing_list, "dst:staging"))
        self.run(self.rc("copy", "--ignore-times", self.delta_dir, "dst:staging"))
        self.psql("stg_pachyderm", "INSERT INTO commits (repo, branch, origin, info) SELECT 'staging', 'master', 1, "
                                   f"md5('{round_}' || g) FROM generate_series(1, 5000) g")
        self.psql("stg_dex", f"INSERT INTO keys VALUES ('stg-{round_}-{time.monotonic()}', 'x', now())")
        # Written out, as a staging cluster's database would be when the
        # refresh comes: nothing left for the swap's checkpoint but itself.
        self.psql("postgres", "CHECKPOINT")

    def check(self, what):
        """Staging equals production: every object (size and MD5) and row count."""
        one_way = ["--one-way"] if self.args.keep_extraneous else []
        r = subprocess.run(self.rc("check", *one_way, "src:prod", "dst:staging"), env=self.env, capture_output=True,
                           text=True)
        if r.returncode != 0:
            raise SystemExit(f"{what}: staging's bucket differs from production's:\n{r.stderr[-2000:]}")
        if self.counts("stg_pachyderm") != self.prod_counts or self.counts("stg_dex") != self.prod_dex_counts:
            raise SystemExit(f"{what}: staging's databases differ from production's")
        with open(os.path.join(self.cluster_dir, "state.json")) as f:
            st = json.load(f)
        if st["deployments"].get("pachd") != 1 or st["rcs"].get("pipeline-a-v1") != 1:
            raise SystemExit(f"{what}: the cluster was not resumed: {st}")

    # ------------------------------------------------------------- runs ----
    def timed_json(self, cmd):
        """Runs a haul command under /usr/bin/time; (wall s, JSON, peak RSS MiB, CPU s)."""
        t0 = time.monotonic()
        r = subprocess.run(["/usr/bin/time", "-v"] + cmd, env=self.env, capture_output=True, text=True)
        wall = time.monotonic() - t0
        if r.returncode != 0:
            raise SystemExit(f"command failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
        rss = cpu = 0.0
        for line in r.stderr.splitlines():
            if "Maximum resident set size" in line:
                rss = int(line.split()[-1]) / 1024
            elif "User time (seconds)" in line or "System time (seconds)" in line:
                cpu += float(line.split()[-1])
        return wall, json.loads(r.stdout), rss, cpu

    def targets(self):
        return ["--to", "s3://staging", "--db", f"pachyderm={self.db_url('stg_pachyderm')}",
                "--db", f"dex={self.db_url('stg_dex')}"] + ([] if self.args.keep_extraneous else ["--delete-extraneous"])

    def refresh(self, label):
        prev = self.db_size("stg_pachyderm_haul_prev")
        cmd = self.haul("restore", "latest", "--repo", self.repo, *self.targets(),
                        "--pause", "kubectl", "--context", "bench", "--namespace", "pachyderm",
                        *shlex.split(self.args.refresh_flags))
        wall, rep, rss, cpu = self.timed_json(cmd)
        paused = {}
        for p in rep["phases"]:
            if p.get("paused"):
                paused[p["name"]] = paused.get(p["name"], 0.0) + p["seconds"]
        live = {p["name"]: p["seconds"] for p in rep["phases"] if not p.get("paused")}
        run = {"kind": "refresh", "label": label, "down": rep["downtime_s"], "wall": wall, "rss": rss, "cpu": cpu,
               "paused_phases": paused, "live_phases": live, "prev_dropped_bytes": prev,
               "live_bytes": rep["live"]["bytes_copied"], "live_objects": rep["live"]["objects_copied"],
               "live_deferred": rep["live"].get("objects_deferred", 0),
               "paused_bytes": rep["paused"]["bytes_copied"], "paused_objects": rep["paused"]["objects_copied"],
               "deleted": rep["paused"]["objects_deleted"],
               "db_bytes": sum(d["restore"]["bytes"] for d in rep["databases"]),
               "db_restore_s": {d["name"]: d["restore"]["duration_s"] for d in rep["databases"]},
               "plan": rep.get("plan"), "report": rep}
        log(f"{label}: refresh down {run['down']:.2f}s ({', '.join(f'{k} {v:.2f}' for k, v in paused.items())}), "
            f"{wall:.1f}s in all (live: {', '.join(f'{k} {v:.1f}' for k, v in live.items())}); bucket bytes "
            f"live {run['live_bytes']} + paused {run['paused_bytes']} (delta {self.delta_bytes}); "
            f"previous database dropped by the refresh (live since 8f83422): {prev / 1e9:.2f} GB")
        self.check(label)
        return run

    def kubectl(self, *a):
        return subprocess.run(["kubectl", "--context", "bench", "--namespace", "pachyderm", *a], env=self.env,
                              check=True, capture_output=True, text=True).stdout

    def naive(self, label):
        """By hand: scale pachd and the workers to 0 and wait for their pods;
        restore over the live databases (--clean) and the bucket; scale back."""
        t0 = time.monotonic()
        self.kubectl("scale", "deployment", "pachd", "--replicas=0")
        self.kubectl("scale", "rc", "pipeline-a-v1", "--replicas=0")
        for sel in ("app=pachd", "suite=pachyderm,component=worker"):
            while json.loads(self.kubectl("get", "pods", "-l", sel, "-o", "json"))["items"]:
                time.sleep(0.1)
        t1 = time.monotonic()
        _, rep, rss, cpu = self.timed_json(self.haul("restore", "latest", "--repo", self.repo, *self.targets(),
                                                     "--clean"))
        t2 = time.monotonic()
        self.kubectl("scale", "deployment", "pachd", "--replicas=1")
        self.kubectl("scale", "rc", "pipeline-a-v1", "--replicas=1")
        t3 = time.monotonic()
        phases = {"pause": t1 - t0, "restore --clean": t2 - t1, "resume": t3 - t2}
        run = {"kind": "naive", "label": label, "down": t3 - t0, "wall": t3 - t0, "rss": rss, "cpu": cpu,
               "paused_phases": phases, "bucket_bytes": rep["bytes_copied"], "bucket_objects": rep["objects_copied"],
               "deleted": rep["objects_deleted"], "db_bytes": sum(d["bytes"] for d in rep["databases"]),
               "db_restore_s": {d["name"]: d["duration_s"] for d in rep["databases"]}, "report": rep}
        log(f"{label}: naive down {run['down']:.2f}s ({', '.join(f'{k} {v:.2f}' for k, v in phases.items())}); "
            f"bucket bytes {run['bucket_bytes']} (delta {self.delta_bytes})")
        self.check(label)
        return run

    def measure(self):
        self.runs = []
        tools = [("refresh", self.refresh), ("naive", self.naive)]
        warm = 0 if self.args.smoke else 1
        for i in range(warm + self.args.runs):
            k = i % len(tools)
            for name, fn in tools[k:] + tools[:k]:
                label = f"{'warm-up' if i < warm else f'round {i - warm + 1}'} {name}"
                self.reset(i)
                load = os.getloadavg()[0]
                run = fn(label)
                # What else ran: the 1-minute load average before and after.
                run["load"] = [load, os.getloadavg()[0]]
                run["warm"] = i < warm
                self.runs.append(run)

    # ----------------------------------------------------------- report ----
    def report(self):
        b = self.bucket_info
        timed = [r for r in self.runs if not r["warm"]] or self.runs
        ref = [r for r in timed if r["kind"] == "refresh"]
        nai = [r for r in timed if r["kind"] == "naive"]
        med = lambda rs, f: statistics.median(f(r) for r in rs)
        rng = lambda rs, f: f"{min(f(r) for r in rs):.2f}–{max(f(r) for r in rs):.2f}"
        out = [f"Production: {b['objects']:,} objects, {b['bytes'] / MIB:.0f} MiB; `pachyderm` {self.prod_db / 1e9:.2f} GB. "
               f"Staging's difference: {b['missing']} missing ({b['missing_bytes'] / MIB:.1f} MiB), "
               f"{b['different']} different ({b['different_bytes'] / MIB:.1f} MiB), "
               f"{b['extraneous']} extraneous ({b['extraneous_bytes'] / MIB:.1f} MiB); the delta to copy: "
               f"{self.delta_bytes / MIB:.1f} MiB ({self.delta_bytes / b['bytes']:.1%} of the bucket). "
               f"Extraneous objects {'kept' if self.args.keep_extraneous else 'deleted (--delete-extraneous)'}; "
               f"refresh flags: {self.args.refresh_flags or '(none)'}; PostgreSQL "
               f"{'durable (fsync on)' if self.args.pg_durable else 'as the tests run it (fsync off)'}.", "",
               "| run | refresh: paused s | refresh's paused phases (s) | refresh in all s | bucket bytes live + paused "
               "| / delta | naive: paused s | naive's phases (s) | naive / refresh | load (1 min) |",
               "|---|---:|---|---:|---:|---:|---:|---|---:|---|"]
        labels = list(dict.fromkeys(r["label"].rsplit(" ", 1)[0] for r in self.runs))
        for lab in labels:
            r = next((x for x in self.runs if x["label"] == f"{lab} refresh"), None)
            n = next((x for x in self.runs if x["label"] == f"{lab} naive"), None)
            phases = lambda x: ", ".join(f"{k} {v:.2f}" for k, v in x["paused_phases"].items())
            moved = r["live_bytes"] + r["paused_bytes"] if r else 0
            load = " / ".join(f"{x['load'][0]:.1f}–{x['load'][1]:.1f}" for x in (r, n) if x)
            out.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
                lab, f"{r['down']:.2f}" if r else "-", phases(r) if r else "-", f"{r['wall']:.1f}" if r else "-",
                f"{r['live_bytes'] / MIB:.1f} + {r['paused_bytes'] / MIB:.1f} MiB" if r else "-",
                f"{moved / self.delta_bytes:.2f}" if r else "-", f"{n['down']:.2f}" if n else "-",
                phases(n) if n else "-", f"{n['down'] / r['down']:.1f}x" if r and n else "-", load))
        if ref and nai:
            rd, nd = med(ref, lambda r: r["down"]), med(nai, lambda r: r["down"])
            out += ["", f"Medians of {len(ref)} timed round(s): refresh paused {rd:.2f} s ({rng(ref, lambda r: r['down'])}), "
                    f"naive {nd:.2f} s ({rng(nai, lambda r: r['down'])}): **{nd / rd:.1f}x**; refresh in all "
                    f"{med(ref, lambda r: r['wall']):.1f} s; bucket bytes moved by the refresh "
                    f"{med(ref, lambda r: r['live_bytes'] + r['paused_bytes']) / MIB:.1f} MiB for a delta of "
                    f"{self.delta_bytes / MIB:.1f} MiB, by the naive restore "
                    f"{med(nai, lambda r: r['bucket_bytes']) / MIB:.1f} MiB; database bytes restored: "
                    f"{med(ref, lambda r: r['db_bytes']) / 1e9:.2f} GB (refresh) and "
                    f"{med(nai, lambda r: r['db_bytes']) / 1e9:.2f} GB (naive); peak RSS "
                    f"{max(r['rss'] for r in ref):.0f} / {max(r['rss'] for r in nai):.0f} MiB, haul CPU "
                    f"{med(ref, lambda r: r['cpu']):.1f} / {med(nai, lambda r: r['cpu']):.1f} s."]
        return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny data, one round, no warm-up")
    ap.add_argument("--runs", type=int, default=3, help="timed rounds after the warm-up (default 3)")
    ap.add_argument("--objects", type=int, default=None, help="objects in production's bucket (default 20000)")
    ap.add_argument("--db-gb", type=float, default=None, help="size of production's `pachyderm` in GB (default 2)")
    ap.add_argument("--delta-pct", type=float, default=1.0,
                    help="percent of the objects staging lacks or holds other bytes of (default 1: half each)")
    ap.add_argument("--refresh-flags", default="", help="more flags for the refresh, e.g. --drop-previous")
    ap.add_argument("--keep-extraneous", action="store_true",
                    help="neither procedure deletes staging's own objects (no --delete-extraneous)")
    ap.add_argument("--pg-durable", action="store_true",
                    help="PostgreSQL with fsync, full_page_writes and synchronous_commit on, like a real server")
    ap.add_argument("--haul", default=os.path.join(ROOT, "target", "release", "haul"), help="haul binary")
    ap.add_argument("--workdir", default=None, help="where data sets are generated (default: /tmp)")
    ap.add_argument("--json-out", help="also write every run as JSON here")
    args = ap.parse_args()
    args.objects = args.objects or (200 if args.smoke else 20_000)
    args.db_gb = args.db_gb if args.db_gb is not None else 0.01 if args.smoke else 2.0
    if args.smoke:
        args.runs = 1
    if not os.path.exists(args.haul):
        raise SystemExit(f"no haul binary at {args.haul} (cargo build --release --bin haul, or --haul)")
    b = Refresh(args)
    try:
        b.start()
        b.prepare()
        b.measure()
    finally:
        b.stop()
    print(b.report())
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"bucket": b.bucket_info, "delta_bytes": b.delta_bytes, "db_bytes": b.prod_db, "runs": b.runs},
                      f, indent=2)


if __name__ == "__main__":
    main()
