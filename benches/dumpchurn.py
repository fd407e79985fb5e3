#!/usr/bin/env python3
"""How much of a database dump does an incremental backup upload? By chunk size.

    python3 benches/dumpchurn.py [--mb 200] [--kib 1024,256,64,16] [--haul target/release/haul]

Starts the harness's PostgreSQL (e2e.py's services), builds a database shaped
like Pachyderm's metadata (see SCHEMA: the storage tracker's many small
rows, commits and jobs as protobuf-sized rows, collections of larger
records), about --mb MB of dump, and saves it as a template. Then, for
each change scenario, from a fresh copy of the template (same physical
layout every time):

- spread:        UPDATE 1% of the rows of every table, chosen at random;
- vacuum-append: DELETE 1% at random, VACUUM, INSERT as many new rows (they
                 land in the freed space, in the middle of the tables);
- append:        INSERT 1% new rows (at the end of the tables);
- recent:        UPDATE 1% of the rows of every table, chosen at random among
                 its newest 2% (jobs and commits finishing, which is how
                 Pachyderm writes);
- expire-append: DELETE the oldest 1% (expired tracker rows, old jobs), VACUUM,
                 INSERT as many new rows (they land in the freed pages at the
                 start of the tables);

it backs the database up into one local repository per dump chunk size
(`haul init --dump-chunk-kib`), changes it, backs it up again, and reports
the second backup's upload against the first's (chunks and bytes), and the
first backup's wall time against `pg_dump -Fc -Z0 > /dev/null` alone.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e  # noqa: E402

# Sizes per 100 MB of dump, roughly: rows and their width.
SCHEMA = """
CREATE SCHEMA storage; CREATE SCHEMA pfs; CREATE SCHEMA pps; CREATE SCHEMA collections;
CREATE TABLE storage.tracker_objects (int_id bigserial PRIMARY KEY, str_id text UNIQUE, expires_at timestamptz);
CREATE TABLE storage.tracker_refs (from_id bigint, to_id bigint, PRIMARY KEY (from_id, to_id));
CREATE TABLE pfs.commits (int_id bigserial PRIMARY KEY, commit_id text UNIQUE, repo_id bigint, origin text,
  description text, start_time timestamptz, finished_time timestamptz, size bigint, error text);
CREATE TABLE pps.jobs (int_id bigserial PRIMARY KEY, key text UNIQUE, proto bytea, created_at timestamptz,
  updated_at timestamptz);
CREATE TABLE collections.pipelines (idx text, key text PRIMARY KEY, proto bytea, createdat timestamptz,
  updatedat timestamptz);
"""

# (table, rows per MB of dump, INSERT of n rows starting at id s: SQL with {n} and {s})
TABLES = [
    ("storage.tracker_objects", 5000,
     "INSERT INTO storage.tracker_objects (str_id, expires_at) SELECT 'chunk/' || md5(g::text || 'o{s}') "
     "|| md5(g::text), now() + (g % 1000) * interval '1 minute' FROM generate_series({s}, {s} + {n} - 1) g"),
    ("storage.tracker_refs", 6000,
     "INSERT INTO storage.tracker_refs SELECT g, g * 7 + {s} FROM generate_series({s}, {s} + {n} - 1) g "
     "ON CONFLICT DO NOTHING"),
    ("pfs.commits", 900,
     "INSERT INTO pfs.commits (commit_id, repo_id, origin, description, start_time, finished_time, size, error) "
     "SELECT md5(g::text || 'c{s}'), g % 50, 'USER', repeat(md5(g::text), 2), now(), now(), g::bigint * 1024, '' "
     "FROM generate_series({s}, {s} + {n} - 1) g"),
    ("pps.jobs", 250,
     "INSERT INTO pps.jobs (key, proto, created_at, updated_at) SELECT md5(g::text || 'j{s}'), "
     "decode(repeat(md5(g::text || 'a'), 12) || repeat(md5((g % 97)::text), 20), 'hex'), now(), now() "
     "FROM generate_series({s}, {s} + {n} - 1) g"),
    ("collections.pipelines", 60,
     "INSERT INTO collections.pipelines (idx, key, proto, createdat, updatedat) SELECT 'p' || (g % 40), "
     "'pipeline-' || md5(g::text || 'p{s}'), decode(repeat(md5(g::text), 60) || repeat('00', 2000), 'hex'), "
     "now(), now() FROM generate_series({s}, {s} + {n} - 1) g"),
]

UPDATES = {
    "storage.tracker_objects": "expires_at = expires_at + interval '1 hour'",
    "storage.tracker_refs": "to_id = to_id + 1",
    "pfs.commits": "finished_time = now(), size = size + 1",
    "pps.jobs": "updated_at = now(), proto = proto || '\\x01'::bytea",
    "collections.pipelines": "updatedat = now()",
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=200, help="about how many MB of dump (default 200)")
    ap.add_argument("--kib", default="1024,256,64,16", help="dump chunk averages to compare, KiB")
    ap.add_argument("--haul", default=os.path.join(e2e.ROOT, "target", "release", "haul"))
    ap.add_argument("--scenarios", default="spread,vacuum-append,append,recent,expire-append")
    args = ap.parse_args()

    class Args:
        scale, runs, workdir, smoke, haul = 1.0, 1, None, False, args.haul

    b = e2e.Bench(Args())
    b.start()
    try:
        base = "churn_base"
        b.psql("postgres", f"DROP DATABASE IF EXISTS {base}")
        b.psql("postgres", f"CREATE DATABASE {base}")
        b.psql(base, SCHEMA)
        for table, per_mb, insert in TABLES:
            b.psql(base, insert.format(n=per_mb * args.mb, s=1))
        b.psql(base, "VACUUM ANALYZE")
        kibs = [int(k) for k in args.kib.split(",")]
        rows = []
        for scen in args.scenarios.split(","):
            db = "churn_" + scen.replace("-", "_")
            b.psql("postgres", f"DROP DATABASE IF EXISTS {db}")
            b.psql("postgres", f"CREATE DATABASE {db} TEMPLATE {base}")
            repos = {}
            full = {}
            alone = pg_dump_alone(b, db)
            for k in kibs:
                repo = f"file://{tempfile.mkdtemp(dir=b.tmp)}/repo"
                b.run([args.haul, "init", "--dump-chunk-kib", str(k), repo])
                repos[k] = repo
                full[k] = dump_stats(b, args.haul, repo, db)
                full[k]["alone_s"] = alone
            change(b, db, scen, args.mb)
            for k in kibs:
                inc = dump_stats(b, args.haul, repos[k], db)
                rows.append((scen, k, full[k], inc))
                e2e.log(f"{scen} {k} KiB: {inc['chunks_uploaded']} of {inc['chunks']} chunks, "
                        f"{inc['bytes_uploaded'] / full[k]['bytes_uploaded']:.1%} of the full upload")
            b.psql("postgres", f"DROP DATABASE {db}")
        print("| change | dump chunk avg | dump MB | chunks | chunks uploaded | bytes uploaded / full upload "
              "| full backup s | pg_dump alone s |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for scen, k, f, i in rows:
            print(f"| {scen} | {k} KiB | {i['bytes'] / 1e6:.0f} | {i['chunks']} | "
                  f"{i['chunks_uploaded']} ({i['chunks_uploaded'] / i['chunks']:.1%}) | "
                  f"{i['bytes_uploaded'] / f['bytes_uploaded']:.1%} | {f['wall_s']:.2f} | {f['alone_s']:.2f} |")
    finally:
        b.stop()


def dump_stats(b, haul, repo, db):
    t0 = time.monotonic()
    out = b.run([haul, "--json", "backup", "--db", f"app={b.db_url(db)}", "--repo", repo])
    stats = json.loads(out)["databases"][0]
    stats["wall_s"] = time.monotonic() - t0
    return stats


def pg_dump_alone(b, db):
    t0 = time.monotonic()
    with open(os.devnull, "wb") as null:
        subprocess.run(["pg_dump", "-Fc", "-Z0", "-d", b.db_url(db)], stdout=null, check=True)
    return time.monotonic() - t0


def sql(b, db, text):
    try:
        b.psql(db, text)
    except subprocess.CalledProcessError as e:
        raise SystemExit(f"psql failed on {db}: {e.stderr}\n{text}")


def change(b, db, scen, mb):
    for table, per_mb, insert in TABLES:
        n = max(1, per_mb * mb // 100)
        if scen == "spread":
            sql(b, db, f"UPDATE {table} SET {UPDATES[table]} WHERE random() < 0.01")
        elif scen == "vacuum-append":
            sql(b, db, f"DELETE FROM {table} WHERE random() < 0.01")
            sql(b, db, f"VACUUM {table}")
            sql(b, db, insert.format(n=n, s=10_000_000))
        elif scen == "append":
            sql(b, db, insert.format(n=n, s=20_000_000))
        elif scen == "recent":
            newest = f"SELECT ctid FROM {table} ORDER BY ctid DESC LIMIT {2 * n}"
            sql(b, db, f"UPDATE {table} SET {UPDATES[table]} WHERE ctid = ANY(ARRAY({newest})) "
                       f"AND random() < 0.5")
        elif scen == "expire-append":
            oldest = f"SELECT ctid FROM {table} ORDER BY ctid LIMIT {n}"
            sql(b, db, f"DELETE FROM {table} WHERE ctid = ANY(ARRAY({oldest}))")
            sql(b, db, f"VACUUM {table}")
            sql(b, db, insert.format(n=n, s=30_000_000))
        else:
            raise SystemExit(f"unknown scenario {scen}")


if __name__ == "__main__":
    main()
