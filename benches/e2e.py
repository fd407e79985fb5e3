#!/usr/bin/env python3
"""haul vs rclone, end to end, on the same S3 server in the same run.

One command:  python3 benches/e2e.py            (full scale, ~1 hour)
              python3 benches/e2e.py --quick    (1/10 scale, a few minutes)
              python3 benches/e2e.py --smoke    (tiny; proves the harness runs; CI runs it)

The paused window at scale, behind a 50 ms latency proxy (not in the
default set; `--smoke` runs it tiny):
              python3 benches/e2e.py --scenarios scale --objects 200000 --db-gb 2 \
                  --haul-before OLD/haul --runs 2

It starts its own SeaweedFS (scripts/services.sh on its own ports), uses
rclone from the same venv, generates the data sets, runs every scenario for
haul and for rclone alternately, several times, and prints a Markdown table
of medians, ratios and peak RSS (from /usr/bin/time -v) for BENCHMARKS.md.

The server's ceiling, measured: the cluster-like scenario also runs
`s3probe` (benches/s3probe.rs), the leanest client that can move the same
bytes: a raw copy (whole-object GET then PUT, unsigned, nothing hashed) for
the bucket-to-bucket backup, and a raw upload of the same files from memory
for a backup from local files. haul's throughput is reported as a fraction
of each, measured in the same run, alternating.

Server CPU: every timed run also records the CPU seconds the S3 server
(SeaweedFS, on the same cores) spent during it. A strict bound follows: with
a client that used no CPU at all, the server could use every core, so no
client moves the bytes faster than in (server CPU seconds / cores).

Fairness: rclone copies between two remotes with server-side copy disabled
(`--disable Copy`), so that both tools move every byte through the client,
as a backup to a separate store must; rclone gets the same parallelism as
haul (`--transfers 32 --checkers 32`) and `--fast-list`. Full backups and
their ceilings start with one untimed warm-up round, then rotate the order
of the tools every round (see `rounds`). Incremental rounds alternate
between `sync --checksum` (ETags from listings, its fastest correct mode)
and plain `sync` (size + modtime, a HEAD per object).
"""

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1 << 20

# Its own ports and cluster so it never touches the test services.
SERVICES_ENV = {
    "HAUL_S3_PORT": "28333",
    "HAUL_PG_PORT": "57432",
    "HAUL_PG_CLUSTER": "haulbench",
    # moto and Azurite are for the tests only.
    "HAUL_ALT_STORES": "0",
    "HAUL_SERVICES_DIR": "/tmp/haul-bench-services",
}


def log(msg):
    print(f"[e2e] {msg}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, args):
        self.args = args
        self.results = []  # rows for the table
        self.tmp = tempfile.mkdtemp(prefix="haul-e2e-", dir=args.workdir)
        self.n_bucket = 0
        self.scale_rows = []  # the scale scenario's own table
        self.proxy = None

    # ---------------------------------------------------------- services --
    def start(self):
        # Repositories are encrypted, as operators' are (format v2): every
        # haul the harness runs gets this key file.
        key = os.path.join(self.tmp, "bench.key")
        with open(os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(os.urandom(32).hex() + "\n")
        os.environ["HAUL_KEY_FILE"] = key
        env = dict(os.environ, **SERVICES_ENV)
        subprocess.run(["bash", f"{ROOT}/scripts/services.sh", "start"], env=env, check=True)
        out = subprocess.run(["bash", f"{ROOT}/scripts/services.sh", "env"], env=env, check=True,
                             capture_output=True, text=True).stdout
        vals = {}
        for line in out.splitlines():
            line = line.strip()
            if line.startswith("export "):
                k, _, v = line[len("export "):].partition("=")
                vals[k] = v.strip("'\"")
        self.endpoint = vals["HAUL_TEST_S3_ENDPOINT"]
        self.key = vals["HAUL_TEST_S3_ACCESS_KEY"]
        self.secret = vals["HAUL_TEST_S3_SECRET_KEY"]
        self.rclone = os.path.join(vals["HAUL_TOOLS_BIN"], "rclone")
        self.pg_url = vals["HAUL_TEST_PG_URL"]
        with open(os.path.join(SERVICES_ENV["HAUL_SERVICES_DIR"], "weed.pid")) as f:
            self.server_pid = int(f.read().strip())
        self.env = dict(os.environ)
        self.env.update({
            "AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.key,
            "AWS_SECRET_ACCESS_KEY": self.secret, "AWS_REGION": "us-east-1",
        })
        for remote in ("SRC", "DST"):
            p = f"RCLONE_CONFIG_{remote}_"
            self.env.update({
                p + "TYPE": "s3", p + "PROVIDER": "SeaweedFS", p + "ENDPOINT": self.endpoint,
                p + "ACCESS_KEY_ID": self.key, p + "SECRET_ACCESS_KEY": self.secret,
                p + "REGION": "us-east-1", p + "FORCE_PATH_STYLE": "true",
            })

    def stop(self):
        self.stop_proxy()
        env = dict(os.environ, **SERVICES_ENV)
        subprocess.run(["bash", f"{ROOT}/scripts/services.sh", "stop"], env=env)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------ tools ----
    def run(self, cmd, quiet=True):
        r = subprocess.run(cmd, env=self.env, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"command failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
        return r.stdout

    def server_cpu(self):
        """CPU seconds (user + system) the S3 server has used so far."""
        with open(f"/proc/{self.server_pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def timed(self, cmd):
        """Runs cmd; returns (seconds, peak RSS in MiB, stdout, CPU s, server CPU s)."""
        s0 = self.server_cpu()
        t0 = time.monotonic()
        r = subprocess.run(["/usr/bin/time", "-v"] + cmd, env=self.env, capture_output=True, text=True)
        dt = time.monotonic() - t0
        srv = self.server_cpu() - s0
        if r.returncode != 0:
            raise SystemExit(f"command failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout}\n{r.stderr[-3000:]}")
        rss, cpu = 0, 0.0
        for line in r.stderr.splitlines():
            if "Maximum resident set size" in line:
                rss = int(line.split()[-1]) / 1024
            elif "User time (seconds)" in line or "System time (seconds)" in line:
                cpu += float(line.split()[-1])
        return dt, rss, r.stdout, cpu, srv

    def rc(self, *args):
        return [self.rclone, "--config", "/dev/null", "--transfers", "32", "--checkers", "32",
                "--fast-list", "--s3-no-check-bucket", "--disable", "Copy", *args]

    def haul(self, *args):
        return [self.args.haul, "--json", *args]

    def bucket(self, tag):
        """A fresh bucket, warmed; returns "bucket/d", the prefix to measure in.

        SeaweedFS allocates a volume on the first write into a new bucket
        (about a second): a marker outside the measured prefix takes that
        cost before any timed run, whichever tool writes first."""
        self.n_bucket += 1
        name = f"b-{tag}-{self.n_bucket}"
        self.run([self.rclone, "--config", "/dev/null", "mkdir", f"dst:{name}"])
        subprocess.run([self.rclone, "--config", "/dev/null", "rcat", f"dst:{name}/warm"], input=b"warm",
                       env=self.env, check=True, capture_output=True)
        return f"{name}/d"

    def drop(self, name):
        bucket = name.split("/")[0]
        subprocess.run([self.rclone, "--config", "/dev/null", "purge", f"dst:{bucket}"], env=self.env,
                       capture_output=True)

    # ------------------------------------------------------------- data ----
    def make_dir(self, name, sizes, prefix="chunk/"):
        """Writes len(sizes) files of incompressible bytes; returns the dir."""
        d = os.path.join(self.tmp, name)
        rnd = random.Random(name)
        buf = os.urandom(max(sizes) if sizes else 1)
        for i, size in enumerate(sizes):
            p = os.path.join(d, f"{prefix}{i:08x}{rnd.getrandbits(64):016x}.0")
            os.makedirs(os.path.dirname(p), exist_ok=True)
            off = rnd.randrange(0, max(1, len(buf) - size)) if size < len(buf) else 0
            # Rotate the shared random buffer so every file differs.
            with open(p, "wb") as f:
                f.write(os.urandom(64))
                f.write(buf[off:off + max(0, size - 64)])
        return d

    def upload(self, local, bucket):
        self.run(self.rc("copy", local, f"src:{bucket}"))

    def record(self, scenario, what, a_runs, b_runs, nbytes, note="", a="haul", b="rclone"):
        """One table row: tool `a` against tool `b` (medians of their runs)."""
        am = statistics.median(r[0] for r in a_runs)
        row = {"scenario": scenario, "what": what, "a": a, "a_s": am, "a_rss": max(r[1] for r in a_runs),
               "a_cpu": statistics.median(r[3] for r in a_runs),
               "a_srv": statistics.median(r[4] for r in a_runs),
               "a_range": [min(r[0] for r in a_runs), max(r[0] for r in a_runs)],
               "bytes": nbytes, "note": note, "runs": len(a_runs)}
        if b_runs:
            bm = statistics.median(r[0] for r in b_runs)
            row.update({"b": b, "b_s": bm, "b_rss": max(r[1] for r in b_runs),
                        "b_cpu": statistics.median(r[3] for r in b_runs),
                        "b_srv": statistics.median(r[4] for r in b_runs), "speedup": bm / am,
                        "b_range": [min(r[0] for r in b_runs), max(r[0] for r in b_runs)]})
        self.results.append(row)
        log(json.dumps(row))

    # -------------------------------------------------------- scenarios ----
    def ceiling(self, scenario, nbytes):
        """The zero-client-CPU bound of the scenario's rclone row: the server's
        CPU seconds spread over every core, the time a client using no CPU
        could not beat."""
        last = next(r for r in reversed(self.results) if r["scenario"] == scenario and r.get("b") == "rclone")
        cores = os.cpu_count()
        for tool in ("a", "b"):
            floor = last[f"{tool}_srv"] / cores
            log(f"{scenario}: server used {last[f'{tool}_srv']:.1f} CPU s with {last[tool]}: "
                f"no client beats {floor:.2f} s ({nbytes / MIB / floor:.0f} MiB/s); "
                f"{last[tool]} reached {floor / last[f'{tool}_s']:.0%} of that")
        # The table reports the floor measured during rclone's runs (the leaner client).
        last["ceiling_s"] = last["b_srv"] / cores

    def rounds(self, tools):
        """Runs every tool `runs` times; returns each tool's timed runs.

        Fairness: one untimed warm-up round first (the first runs of a fresh
        server pay for its cold caches and volume allocation), then the order
        rotates every round, so no tool always runs first, or always right
        after another one's cleanup."""
        out = {name: [] for name, _ in tools}
        warm = 0 if self.args.smoke else 1
        for i in range(warm + self.args.runs):
            k = i % len(tools)
            for name, run in tools[k:] + tools[:k]:
                r = run()
                if i >= warm:
                    out[name].append(r)
        return out

    def full_backup(self, scenario, src_bucket, nbytes, raw=False):
        """haul's full backup against rclone copy; with `raw`, also against
        the raw copy probe (the server's measured copy ceiling)."""
        def rclone():
            dst = self.bucket("rc")
            r = self.timed(self.rc("copy", f"src:{src_bucket}", f"dst:{dst}"))
            self.drop(dst)
            return r

        def raw_copy():
            dst = self.bucket("raw")
            r = self.probe("copy", src_bucket, dst)
            self.drop(dst)
            return r

        tools = [("haul", lambda: self.haul_full(f"s3://{src_bucket}")), ("rclone", rclone)]
        if raw:
            tools.append(("raw", raw_copy))
        runs = self.rounds(tools)
        self.record(scenario, "full backup vs rclone copy", runs["haul"], runs["rclone"], nbytes)
        if raw:
            self.record(scenario, "full backup vs the raw copy (measured ceiling)", runs["haul"], runs["raw"],
                        nbytes, b="raw copy")

    def haul_full(self, source):
        """One timed full backup of `source` into a fresh repository."""
        repo = self.bucket("repo")
        # A variant with HAUL_KEY_FILE= (empty) measures an unencrypted repository.
        plain = self.env.get("HAUL_KEY_FILE") == ""
        self.run(self.haul("init", *(["--insecure-no-encryption"] if plain else []), f"s3://{repo}"))
        r = self.timed(self.haul("backup", "--source", source, "--repo", f"s3://{repo}"))
        self.drop(repo)
        return r

    def probe(self, what, src, dst):
        """A timed s3probe run; its wall time is the probe's own (an upload
        reads its files into memory before the clock starts)."""
        dt, rss, out, cpu, srv = self.timed([self.args.probe, what, src, dst, str(self.args.probe_parallel)])
        return json.loads(out)["seconds"], rss, out, cpu, srv

    def upload_ceiling(self, local, nbytes):
        """A backup from local files against the raw upload of the same
        files: the server's upload ceiling, with no source bucket to serve."""
        def raw_upload():
            dst = self.bucket("up")
            r = self.probe("upload", local, dst)
            self.drop(dst)
            return r

        runs = self.rounds([("haul", lambda: self.haul_full(f"file://{local}")), ("raw", raw_upload)])
        haul_runs, raw_runs = runs["haul"], runs["raw"]
        self.record("cluster-like (local files)", "full backup from local files vs the raw upload (measured ceiling)",
                    haul_runs, raw_runs, nbytes, b="raw upload")

    def cluster_data(self):
        """The cluster-like data set (~2 GiB of 1-20 MB objects at full
        scale), as local files and in the source bucket: (dir, bucket, sizes)."""
        total = self.args.scale * 2048 * MIB
        rnd = random.Random(1)
        sizes = []
        while sum(sizes) < total:
            sizes.append(rnd.randrange(1 * MIB, 20 * MIB))
        local = self.make_dir("cluster", sizes)
        src = "src-cluster"
        self.run([self.rclone, "--config", "/dev/null", "mkdir", f"src:{src}"])
        self.upload(local, src)
        return local, src, sizes

    def cluster_like(self):
        local, src, sizes = self.cluster_data()
        self.full_backup("cluster-like", src, sum(sizes), raw=True)
        self.ceiling("cluster-like", sum(sizes))
        self.upload_ceiling(local, sum(sizes))
        if "downtime" in self.args.scenarios.split(","):
            self.downtime(src, sum(sizes))
        shutil.rmtree(local)
        return src, sizes

    def fake_cluster(self):
        """A fake Pachyderm cluster (tests/fakes: kubectl and pachctl over a
        state file), so `--pause kubectl` runs its real procedure here."""
        d = os.path.join(self.tmp, "cluster")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "state.json"), "w") as f:
            json.dump({"contexts": ["bench"], "current_context": "bench",
                       "pachctl": {"active_context": "bench", "active_enterprise_context": "bench"},
                       "deployments": {"pachd": 1}, "rcs": {"pipeline-a-v1": 1},
                       "pod_linger_s": 0.3, "fail": [], "paused": "unpaused", "paused_at": None,
                       "scaled_to_zero": {}}, f)
        open(os.path.join(d, "calls.log"), "w").close()
        return dict(self.env, FAKE_CLUSTER_DIR=d,
                    PATH=os.path.join(ROOT, "tests", "fakes") + os.pathsep + self.env["PATH"])

    def downtime(self, src_bucket, nbytes):
        """What the cluster is down for: haul's two-phase backup (pre-copy
        live, pause for the last delta) against the manual procedure (pause,
        copy the whole bucket with rclone, unpause). The bucket is quiet while
        haul pre-copies, so haul's figure is the floor of its paused phase:
        pause, one more listing, commit, resume."""
        env = self.fake_cluster()
        haul_runs, manual_runs = [], []
        for _ in range(self.args.runs):
            repo = self.bucket("repo")
            self.run(self.haul("init", f"s3://{repo}"))
            t0 = time.monotonic()
            r = subprocess.run(["/usr/bin/time", "-v"] + self.haul(
                "backup", "--source", f"s3://{src_bucket}", "--repo", f"s3://{repo}",
                "--pause", "kubectl", "--context", "bench"), env=env, capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(f"haul backup --pause failed:\n{r.stderr[-3000:]}")
            rep = json.loads(r.stdout)
            rss = max((int(l.split()[-1]) / 1024 for l in r.stderr.splitlines() if "Maximum resident" in l), default=0)
            log(f"two-phase backup: {time.monotonic() - t0:.1f}s in all, down {rep['downtime_s']:.2f}s, "
                f"{rep['precopy_rounds']} pre-copy round(s)")
            haul_runs.append((rep["downtime_s"], rss, "", 0.0, 0.0))
            self.drop(repo)
            dst = self.bucket("rc")
            manual_runs.append(self.timed(self.rc("copy", f"src:{src_bucket}", f"dst:{dst}")))
            self.drop(dst)
        self.record("downtime", "cluster down: two-phase backup vs pause + rclone copy + unpause",
                    haul_runs, manual_runs, 0, note=f"{nbytes / MIB:.0f} MiB quiet bucket; A s and B s are seconds paused")

    def many_small(self):
        n = int(self.args.scale * 100_000)
        rnd = random.Random(2)
        sizes = [rnd.randrange(1024, 16 * 1024) for _ in range(n)]
        local = self.make_dir("small", sizes)
        src = "src-small"
        self.run([self.rclone, "--config", "/dev/null", "mkdir", f"src:{src}"])
        self.upload(local, src)
        self.full_backup("many-small", src, sum(sizes))

        # No-change re-run, and incremental at 1%: one repository and one
        # rclone copy, kept in step; each round changes another 1%.
        repo, dst = self.bucket("repo"), self.bucket("rc")
        self.run(self.haul("init", f"s3://{repo}"))
        self.run(self.haul("backup", "--source", f"s3://{src}", "--repo", f"s3://{repo}"))
        self.run(self.rc("copy", f"src:{src}", f"dst:{dst}"))
        h, r = [], []
        for _ in range(self.args.runs):
            h.append(self.timed(self.haul("backup", "--source", f"s3://{src}", "--repo", f"s3://{repo}")))
            r.append(self.timed(self.rc("sync", "--checksum", f"src:{src}", f"dst:{dst}")))
        self.record("many-small", "no-change re-run vs rclone sync (--checksum)", h, r, 0)

        # Each round changes another 1%; rounds alternate between rclone's
        # fastest correct sync (--checksum: ETags from listings) and its
        # default (size and modification time, read with a HEAD per object).
        names = sorted(os.path.relpath(os.path.join(dp, f), local) for dp, _, fs in os.walk(local) for f in fs)
        modes = {"--checksum": ([], []), "default": ([], [])}
        for round_ in range(2 * self.args.runs):
            mode = "--checksum" if round_ % 2 == 0 else "default"
            changed = self.change(local, names, round_)
            self.upload_changed(local, changed, src)
            h, r = modes[mode]
            h.append(self.timed(self.haul("backup", "--source", f"s3://{src}", "--repo", f"s3://{repo}")))
            flags = ["--checksum"] if mode == "--checksum" else []
            r.append(self.timed(self.rc("sync", *flags, f"src:{src}", f"dst:{dst}")))
        for mode, (h, r) in modes.items():
            self.record("incremental", f"1% changed: backup vs rclone sync ({mode})", h, r, 0,
                        note=f"{len(changed)} objects changed per round")
        snaps = json.loads(self.run(self.haul("snapshots", "--repo", f"s3://{repo}")))
        self.refresh(repo, snaps, sum(sizes))
        shutil.rmtree(local)

    def change(self, local, names, round_):
        """Overwrites 0.5% and adds 0.5% of objects; returns the changed paths."""
        rnd = random.Random(100 + round_)
        k = max(1, len(names) // 200)
        changed = rnd.sample(names, k)
        for n in changed:
            p = os.path.join(local, n)
            size = os.path.getsize(p)
            with open(p, "wb") as f:
                f.write(os.urandom(size))
        for i in range(k):
            n = f"chunk/new-{round_}-{i:06d}.0"
            with open(os.path.join(local, n), "wb") as f:
                f.write(os.urandom(rnd.randrange(1024, 16 * 1024)))
            changed.append(n)
        return changed

    def upload_changed(self, local, changed, bucket):
        lst = os.path.join(self.tmp, "changed.txt")
        with open(lst, "w") as f:
            f.write("\n".join(changed) + "\n")
        self.run(self.rc("copy", "--files-from", lst, "--no-traverse", local, f"src:{bucket}"))

    def refresh(self, repo, snaps, nbytes):
        """Restore the newest snapshot over a target holding the one before."""
        older, newer = snaps[-2]["id"], snaps[-1]["id"]
        h, full, r = [], [], []
        for _ in range(self.args.runs):
            tgt = self.bucket("tgt")
            self.run(self.haul("restore", older, "--repo", f"s3://{repo}", "--to", f"s3://{tgt}"))
            h.append(self.timed(self.haul("restore", newer, "--repo", f"s3://{repo}", "--to", f"s3://{tgt}")))
            self.drop(tgt)
            empty = self.bucket("full")
            full.append(self.timed(self.haul("restore", newer, "--repo", f"s3://{repo}", "--to", f"s3://{empty}")))
            self.drop(empty)
            # rclone: a target holding the older state, synced to the newer source.
            rtgt = self.bucket("rtgt")
            self.run(self.haul("restore", older, "--repo", f"s3://{repo}", "--to", f"s3://{rtgt}"))
            r.append(self.timed(self.rc("sync", "--checksum", "src:src-small", f"dst:{rtgt}")))
            self.drop(rtgt)
        self.record("refresh", "restore newer over older vs rclone sync", h, r, 0)
        self.record("refresh", "refresh vs full restore into an empty bucket", h, full, 0,
                    b="haul full restore")

    def large_object(self):
        size = int(self.args.scale * 6 * 1024) * MIB + 12345
        local = os.path.join(self.tmp, "large")
        os.makedirs(local)
        with open(os.path.join(local, "big.0"), "wb") as f:
            block = os.urandom(64 * MIB)
            left = size
            while left > 0:
                n = min(left, len(block))
                f.write(block[:n - 8] + left.to_bytes(8, "little") if n >= 8 else block[:n])
                left -= n
        src = "src-large"
        self.run([self.rclone, "--config", "/dev/null", "mkdir", f"src:{src}"])
        self.upload(local, src)
        shutil.rmtree(local)
        self.full_backup("one-large", src, size)
        repo = self.bucket("repo")
        self.run(self.haul("init", f"s3://{repo}"))
        self.run(self.haul("backup", "--source", f"s3://{src}", "--repo", f"s3://{repo}"))
        h, r = [], []
        for _ in range(self.args.runs):
            t = self.bucket("lt")
            h.append(self.timed(self.haul("restore", "latest", "--repo", f"s3://{repo}", "--to", f"s3://{t}")))
            self.drop(t)
            t = self.bucket("lr")
            r.append(self.timed(self.rc("copy", f"src:{src}", f"dst:{t}")))
            self.drop(t)
        self.record("one-large", "restore (multipart) vs rclone copy", h, r, size)
        self.drop(repo)

    def listing_scale(self):
        n = int(self.args.scale * 1_000_000) if not self.args.smoke else 2000
        d = os.path.join(self.tmp, "listing")
        for i in range(n):
            sub = os.path.join(d, f"{i // 10000:03d}")
            if i % 10000 == 0:
                os.makedirs(sub, exist_ok=True)
            open(os.path.join(sub, f"{i:08d}"), "wb").close()
        repo = os.path.join(self.tmp, "listing-repo")
        self.run(self.haul("init", f"file://{repo}"))
        runs = [self.timed(self.haul("backup", "--source", f"file://{d}", "--repo", f"file://{repo}"))]
        runs.append(self.timed(self.haul("backup", "--source", f"file://{d}", "--repo", f"file://{repo}")))
        self.record("listing-scale", f"backup of {n} empty objects (file), full then no-change", runs, None, 0)
        shutil.rmtree(d)
        shutil.rmtree(repo)

    # ------------------------------------------------------------ scale ----
    # The paused window at scale: a bucket of many small objects and a
    # `pachyderm` database of some GB, the S3 server behind a loopback proxy
    # that adds a round trip (benches/latency_proxy.py) to every request.

    def start_proxy(self):
        """Starts the latency proxy in front of the S3 server; returns its endpoint."""
        upstream = urllib.parse.urlparse(self.endpoint)
        self.proxy = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "benches", "latency_proxy.py"), "--listen", "0",
             "--upstream-host", upstream.hostname, "--upstream", str(upstream.port),
             "--delay-ms", str(self.args.delay_ms)], stdout=subprocess.PIPE, text=True)
        line = self.proxy.stdout.readline().split()
        if line[:1] != ["ready"]:
            raise SystemExit(f"latency proxy did not start: {line}")
        return f"http://127.0.0.1:{line[1]}"

    def stop_proxy(self):
        if self.proxy and self.proxy.poll() is None:
            self.proxy.terminate()
            try:
                self.proxy.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proxy.kill()
                self.proxy.wait()
        self.proxy = None

    def db_url(self, db):
        """The test server's URL for database `db` (postgres, trust, loopback)."""
        return self.pg_url.rsplit("/", 1)[0] + "/" + db

    def psql(self, db, sql):
        return subprocess.run(["psql", self.db_url(db), "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql], env=self.env,
                              check=True, capture_output=True, text=True).stdout.strip()

    def scale_db(self, gb):
        """A `pachyderm` database of `gb` GB (pg_database_size), generated
        server-side; a tiny `dex`. Returns the size in bytes."""
        for db in ("pachyderm", "dex"):
            self.psql("postgres", f"DROP DATABASE IF EXISTS {db}")
            self.psql("postgres", f"CREATE DATABASE {db}")
        self.psql("dex", "CREATE TABLE keys (id text PRIMARY KEY, signing_key text, next_rotation timestamptz);"
                         "INSERT INTO keys SELECT 'k' || g, md5(g::text), now() FROM generate_series(1, 20) g")
        # Text payloads of hex digests: about 2:1 for zstd or zlib, like
        # protobuf-in-JSON metadata; two tables, as pfs and pps hold most rows.
        self.psql("pachyderm",
                  "CREATE TABLE commits (id bigserial PRIMARY KEY, repo text, branch text, origin int, "
                  "created timestamptz DEFAULT now(), info text);"
                  "CREATE TABLE fileset_entries (id bigserial PRIMARY KEY, path text, hash text, "
                  "size_bytes bigint, info text);"
                  # Pachyderm's record of its chunk objects (its chunk package's
                  # schema): one row per object put_objects uploads.
                  "CREATE SCHEMA storage;"
                  "CREATE TABLE storage.chunk_objects (chunk_id bytea NOT NULL, gen bigserial NOT NULL, "
                  "uploaded boolean NOT NULL DEFAULT false, tombstone boolean NOT NULL DEFAULT false, "
                  "size int8 NOT NULL, created_at timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP, "
                  "PRIMARY KEY (chunk_id, gen))")
        self.chunk_gen = 0
        payload = " || ".join(["md5(random()::text)"] * 8)
        target, t0, batch = gb * 1e9, time.monotonic(), 4000 if self.args.smoke else 400_000
        size, i = 0, 0
        while True:
            size = int(self.psql("pachyderm", "SELECT pg_database_size('pachyderm')"))
            if size >= target:
                break
            if i % 2 == 0:
                self.psql("pachyderm", f"INSERT INTO commits (repo, branch, origin, info) SELECT 'repo-' || (g % 97), "
                                       f"'master', g % 3, {payload} FROM generate_series(1, {batch}) g")
            else:
                self.psql("pachyderm", f"INSERT INTO fileset_entries (path, hash, size_bytes, info) SELECT "
                                       f"'/data/' || g || '.json', md5(g::text), g % 100000, {payload} "
                                       f"FROM generate_series(1, {batch}) g")
            i += 1
        self.psql("pachyderm", "VACUUM ANALYZE")
        log(f"scale: database pachyderm is {size / 1e9:.2f} GB ({time.monotonic() - t0:.0f}s to generate)")
        return size

    def put_objects(self, bucket, n, seed):
        """Uploads n small objects as Pachyderm names them, chunk/<64 hex
        digits>.<gen as 16 hex digits> (uniformly spread keys), in slices of
        100,000 files, then records each in storage.chunk_objects as
        uploaded (as Pachyderm does after its PUT)."""
        rnd = random.Random(seed)
        buf = os.urandom(1 << 16)
        done, t0 = 0, time.monotonic()
        while done < n:
            k = min(100_000, n - done)
            d = os.path.join(self.tmp, f"objs-{seed}")
            os.makedirs(os.path.join(d, "chunk"))
            rows = os.path.join(self.tmp, f"rows-{seed}.tsv")
            with open(rows, "w", encoding="ascii") as out:
                for _ in range(k):
                    size = rnd.randrange(64, 1024)
                    off = rnd.randrange(0, len(buf) - size)
                    chunk_id, self.chunk_gen = f"{rnd.getrandbits(256):064x}", self.chunk_gen + 1
                    with open(os.path.join(d, "chunk", f"{chunk_id}.{self.chunk_gen:016x}"), "wb") as f:
                        f.write(rnd.getrandbits(128).to_bytes(16, "little") + buf[off:off + size])
                    out.write(f"\\\\x{chunk_id}\t{self.chunk_gen}\tt\t{size + 16}\n")
            # New, unique keys: no need to list or check the destination.
            self.run(self.rc("copy", "--no-check-dest", d, f"src:{bucket}"))
            self.psql("pachyderm", f"\\copy storage.chunk_objects (chunk_id, gen, uploaded, size) FROM '{rows}'")
            os.remove(rows)
            shutil.rmtree(d)
            done += k
            if n >= 100_000:
                log(f"scale: {done}/{n} objects uploaded ({time.monotonic() - t0:.0f}s)")
            seed = f"{seed}+"
            rnd = random.Random(seed)

    @staticmethod
    def kubectl(env, *a):
        return subprocess.run(["kubectl", "--context", "bench", *a], env=env, check=True, capture_output=True,
                              text=True).stdout

    def naive_pause(self, env):
        """By hand, as an operator would: `kubectl scale` pachd, then the
        workers, to 0, and wait until their pods are gone."""
        self.kubectl(env, "scale", "deployment", "pachd", "--replicas=0")
        self.kubectl(env, "scale", "rc", "pipeline-a-v1", "--replicas=0")
        for sel in ("app=pachd", "suite=pachyderm,component=worker"):
            while json.loads(self.kubectl(env, "get", "pods", "-l", sel, "-o", "json"))["items"]:
                time.sleep(0.1)

    def naive_resume(self, env):
        self.kubectl(env, "scale", "deployment", "pachd", "--replicas=1")
        self.kubectl(env, "scale", "rc", "pipeline-a-v1", "--replicas=1")

    def scale_haul(self, name, binary, env, src, repo, dbs, extra):
        """One two-phase backup; returns (downtime s, {paused phase: s}, wall s)."""
        cmd = [binary, "--json", "backup", "--source", f"s3://{src}", "--repo", f"s3://{repo}",
               "--pause", "kubectl", "--context", "bench", *extra]
        for db in dbs:
            cmd += ["--db", f"{db}={self.db_url(db)}"]
        t0 = time.monotonic()
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.monotonic() - t0
        if r.returncode != 0:
            raise SystemExit(f"haul backup --pause failed ({binary}):\n{r.stderr[-3000:]}")
        rep = json.loads(r.stdout)
        phases = rep["phases"]
        if any("paused" in p for p in phases):
            paused = [p for p in phases if p.get("paused")]
        else:
            # Before the phases carried `paused`: everything from `pause` on
            # (pause, the final copy and the dumps, commit, resume).
            at = next(i for i, p in enumerate(phases) if p["name"] == "pause")
            paused = phases[at:]
        by_name = {}
        for p in paused:
            by_name[p["name"]] = by_name.get(p["name"], 0.0) + p["seconds"]
        log(f"scale: {name}: down {rep['downtime_s']:.2f}s ({', '.join(f'{n} {s:.2f}' for n, s in by_name.items())}), "
            f"{wall:.1f}s in all, {rep.get('precopy_rounds')} pre-copy round(s), "
            f"final pass {rep.get('final_pass')} ({rep.get('journal_objects')} from the record)")
        return rep["downtime_s"], by_name, wall

    def scale(self):
        """The paused window at scale: haul before this issue, haul now, and
        the naive procedure (pause, copy the whole bucket, pg_dump, resume),
        every S3 request 50 ms away. Per round, 0.1% new objects and a few
        thousand new rows first; the bucket is quiet during the backups."""
        a = self.args
        counts = [int(c) for c in a.objects.split(",")]
        db_bytes = self.scale_db(a.db_gb)
        proxied = self.start_proxy()
        src = "src-scale"
        self.run([self.rclone, "--config", "/dev/null", "mkdir", f"src:{src}"])
        dbs = ("pachyderm", "dex")
        # name: (binary, databases); `after-bucket-only` shows what the
        # paused pass costs without the dumps running beside it.
        tools = {} if a.only_pachyderm_pass else {"after": (a.haul, dbs, [])}
        if not a.no_pachyderm_pass:
            tools["after-pachyderm"] = (a.haul, dbs, ["--final-pass", "pachyderm"])
        if a.haul_before:
            tools["before"] = (a.haul_before, dbs, [])
        if a.bucket_only:
            tools["after-bucket-only"] = (a.haul, (), [])
        env = self.fake_cluster()
        penv = dict(env, AWS_ENDPOINT_URL=proxied)
        for remote in ("PSRC", "PDST"):
            penv[f"RCLONE_CONFIG_{remote}_ENDPOINT"] = proxied
            for k in ("TYPE", "PROVIDER", "ACCESS_KEY_ID", "SECRET_ACCESS_KEY", "REGION", "FORCE_PATH_STYLE"):
                penv[f"RCLONE_CONFIG_{remote}_{k}"] = self.env[f"RCLONE_CONFIG_SRC_{k}"]
        repos = {name: self.bucket(f"repo-{name}") for name in tools}
        have = 0
        for n in counts:
            self.put_objects(src, n - have, seed=f"scale-{n}")
            have = n
            # Setup, straight to the server: each repository's backup of the
            # bucket as it now is (the first one full).
            for name, (binary, tdbs, extra) in tools.items():
                if n == counts[0]:
                    self.run([binary, "--json", "init", f"s3://{repos[name]}"])
                self.scale_haul(f"{name} (setup, no proxy)", binary, env, src, repos[name], tdbs, extra)
            runs = {name: [] for name in tools}
            runs["naive"] = []
            order = list(tools) + (["naive"] if n <= a.naive_up_to else [])
            for r in range(a.scale_runs):
                # 0.1% new objects and a few thousand new rows since the last backups.
                self.put_objects(src, max(1, n // 1000), seed=f"scale-{n}-change-{r}")
                self.psql("pachyderm", "INSERT INTO commits (repo, branch, origin, info) SELECT 'repo-new', "
                                       "'master', 1, md5(random()::text) FROM generate_series(1, 5000)")
                k = r % len(order)
                self.wait_idle()
                for name in order[k:] + order[:k]:
                    if name == "naive":
                        runs["naive"].append(self.scale_naive(env, penv, src, dbs))
                    else:
                        binary, tdbs, extra = tools[name]
                        runs[name].append(self.scale_haul(name, binary, penv, src, repos[name], tdbs, extra))
            self.scale_record(n, db_bytes, runs, self.scale_listing(src))
        self.stop_proxy()

    def wait_idle(self):
        """With --wait-idle LOAD, holds a timed round until the machine's
        1-minute load average is below LOAD, so that work beside a long
        benchmark (a build during the setup) cannot slow a timed run."""
        limit, t0, said = self.args.wait_idle, time.monotonic(), False
        while limit and os.getloadavg()[0] >= limit:
            if not said:
                log(f"scale: waiting for a 1-minute load below {limit} (now {os.getloadavg()[0]:.2f})")
                said = True
            time.sleep(5)
        if said:
            log(f"scale: idle after {time.monotonic() - t0:.0f}s")

    def scale_listing(self, src):
        """What listing the bucket costs the server itself: one sequential
        `rclone lsf --fast-list`, straight to it (no proxy), with the CPU
        seconds the server spent answering. A paused pass that lists the
        whole bucket cannot beat the server's CPU over its cores."""
        self.wait_idle()
        dt, _, out, cpu, srv = self.timed([self.rclone, "--config", "/dev/null", "lsf", "-R", "--fast-list",
                                           f"src:{src}"])
        listed = out.count("\n")
        log(f"scale: rclone lsf of {listed} objects, no proxy: {dt:.2f}s, server CPU {srv:.2f}s, "
            f"{srv / max(1, listed) * 1e6:.0f} µs of server CPU per object listed")
        return {"seconds": dt, "server_cpu_s": srv, "client_cpu_s": cpu, "objects": listed}

    def scale_naive(self, env, penv, src, dbs):
        """Pause, rclone copy of the whole bucket into a fresh one (through
        the proxy), pg_dump -Fc of each database, resume: the seconds paused."""
        dst = self.bucket("naive")
        out = os.path.join(self.tmp, "naive-dumps")
        os.makedirs(out, exist_ok=True)
        t0 = time.monotonic()
        self.naive_pause(env)
        t1 = time.monotonic()
        subprocess.run(self.rc("copy", f"psrc:{src}", f"pdst:{dst}"), env=penv, check=True, capture_output=True)
        t2 = time.monotonic()
        for db in dbs:
            subprocess.run(["pg_dump", "-Fc", "-f", os.path.join(out, db), self.db_url(db)], env=env, check=True)
        t3 = time.monotonic()
        self.naive_resume(env)
        t4 = time.monotonic()
        phases = {"pause": t1 - t0, "rclone copy": t2 - t1, "pg_dump": t3 - t2, "resume": t4 - t3}
        log(f"scale: naive: down {t4 - t0:.2f}s ({', '.join(f'{k} {v:.2f}' for k, v in phases.items())})")
        shutil.rmtree(out)
        self.drop(dst)
        return t4 - t0, phases, t4 - t0

    def scale_record(self, n, db_bytes, runs, listing):
        def summary(rs):
            if not rs:
                return None
            names = list(dict.fromkeys(k for r in rs for k in r[1]))
            return {"median": statistics.median(r[0] for r in rs), "range": [min(r[0] for r in rs), max(r[0] for r in rs)],
                    "phases": {k: statistics.median(r[1].get(k, 0.0) for r in rs) for k in names},
                    "wall": statistics.median(r[2] for r in rs), "runs": len(rs)}
        row = {"objects": n, "db_bytes": db_bytes, "delay_ms": self.args.delay_ms, "listing": listing,
               **{name: summary(rs) for name, rs in runs.items()}}
        self.scale_rows.append(row)
        log(json.dumps(row))
        as_runs = lambda rs: [(r[0], 0.0, "", 0.0, 0.0) for r in rs]
        note = f"{n} objects, {db_bytes / 1e9:.2f} GB database, {self.args.delay_ms:g} ms per request; seconds paused"
        for other in ("before", "naive"):
            if runs.get("after") and runs.get(other):
                self.record("scale", f"cluster paused: two-phase backup vs {other}", as_runs(runs["after"]),
                            as_runs(runs[other]), 0, note=note, a="haul (after)", b=other)

    def scale_table(self):
        out = ["| objects | database | paused: before | paused: after | paused: naive | after's paused phases (s) "
               "| before / after | naive / after | runs |",
               "|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
        for r in self.scale_rows:
            cell = lambda t: (f"{r[t]['median']:.2f} s ({r[t]['range'][0]:.2f}–{r[t]['range'][1]:.2f})"
                              if r.get(t) else "-")
            ratio = lambda t: f"{r[t]['median'] / r['after']['median']:.1f}x" if r.get(t) and r.get("after") else "-"
            phases = ", ".join(f"{k} {v:.2f}" for k, v in r["after"]["phases"].items()) if r.get("after") else "-"
            runs = "/".join(str(r[t]["runs"]) for t in ("before", "after", "naive") if r.get(t))
            out.append(f"| {r['objects']:,} | {r['db_bytes'] / 1e9:.2f} GB | {cell('before')} | {cell('after')} "
                       f"| {cell('naive')} | {phases} | {ratio('before')} | {ratio('naive')} | {runs} |")
        rows = [r for r in self.scale_rows if r.get("after") and r.get("after-pachyderm")]
        for a, b in zip(rows, rows[1:]):
            grow = lambda t: b[t]["median"] - a[t]["median"]
            out.append(f"- growth {a['objects']:,} → {b['objects']:,} objects: paused window +{grow('after'):.2f} s "
                       f"listing the bucket, +{grow('after-pachyderm'):.2f} s with --final-pass pachyderm")
        for r in self.scale_rows:
            for t in ("after-pachyderm", "before", "naive", "after-bucket-only"):
                if r.get(t):
                    out.append(f"- {r['objects']:,} objects, {t}: paused {r[t]['median']:.2f} s "
                               f"({r[t]['range'][0]:.2f}–{r[t]['range'][1]:.2f}); phases (s): "
                               + ", ".join(f"{k} {v:.2f}" for k, v in r[t]["phases"].items()))
            ls = r["listing"]
            out.append(f"- {r['objects']:,} objects, the server's listing cost: `rclone lsf --fast-list` without "
                       f"the proxy {ls['seconds']:.2f} s, server CPU {ls['server_cpu_s']:.2f} s "
                       f"({ls['server_cpu_s'] / max(1, ls['objects']) * 1e6:.0f} µs per object, "
                       f"{os.cpu_count()} cores)")
        return "\n".join(out)

    # ------------------------------------------------------------ report ---
    def table(self):
        out = ["| scenario | what | A | B | A s | B s | B time / A time | A MiB/s | B MiB/s | A peak RSS | B peak RSS | A CPU s | B CPU s | server CPU s (A / B) | runs |",
               "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in self.results:
            rate = lambda s: f"{r['bytes'] / MIB / s:.0f}" if r["bytes"] and s else "-"
            has_b = "b_s" in r
            srv = f"{r['a_srv']:.1f} / {r['b_srv']:.1f}" if has_b else f"{r['a_srv']:.1f}"
            out.append("| {} | {} | {} | {} | {:.2f} | {} | {} | {} | {} | {:.0f} MiB | {} | {:.1f} | {} | {} | {} |".format(
                r["scenario"], r["what"] + (f" ({r['note']})" if r.get("note") else ""), r["a"],
                r.get("b", "-"), r["a_s"], f"{r['b_s']:.2f}" if has_b else "-",
                f"{r['speedup']:.2f}" if has_b else "-", rate(r["a_s"]), rate(r["b_s"]) if has_b else "-",
                r["a_rss"], f"{r['b_rss']:.0f} MiB" if has_b else "-", r["a_cpu"],
                f"{r['b_cpu']:.1f}" if has_b else "-", srv, r["runs"]))
        notes = []
        for r in self.results:
            if r.get("b", "").startswith("raw"):
                notes.append(f"- {r['scenario']}: {r['a']} at {r['speedup']:.0%} of the {r['b']} "
                             f"({r['b_s']:.2f} s, {r['bytes'] / MIB / r['b_s']:.0f} MiB/s), the ceiling measured "
                             f"with the leanest client; runs of {r['a']} {r['a_range'][0]:.2f}–{r['a_range'][1]:.2f} s, "
                             f"of the {r['b']} {r['b_range'][0]:.2f}–{r['b_range'][1]:.2f} s")
            if "ceiling_s" not in r:
                continue
            floor = r["ceiling_s"]
            rate = r["bytes"] / MIB / floor
            notes.append(f"- {r['scenario']}: zero-client-CPU bound {floor:.2f} s ({rate:.0f} MiB/s) = server CPU "
                         f"{r['b_srv']:.1f} s / {os.cpu_count()} cores; {r['a']} at {floor / r['a_s']:.0%} of it, "
                         f"{r['b']} at {floor / r['b_s']:.0%}; the most any client could beat {r['b']} by is "
                         f"{r['b_s'] / floor:.2f}x")
        return "\n".join(out + ([""] + notes if notes else []))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1/10 of the full scale")
    ap.add_argument("--smoke", action="store_true", help="tiny data, one run: proves the harness works")
    ap.add_argument("--runs", type=int, default=None,
                    help="runs per scenario and tool (median reported; default 3, scale 2)")
    ap.add_argument("--scenarios", default=None,
                    help="comma-separated subset of: cluster, downtime (needs cluster), small, large, listing, "
                         "scale (default: all but scale; --smoke adds a tiny scale)")
    ap.add_argument("--objects", default=None,
                    help="scale: the bucket's object counts, ascending, measured in turn as the bucket grows "
                         "(default 200000; --smoke 300)")
    ap.add_argument("--db-gb", type=float, default=None,
                    help="scale: size of the `pachyderm` database in GB (default 2; --smoke 0.01)")
    ap.add_argument("--delay-ms", type=float, default=50.0,
                    help="scale: added to every S3 request by benches/latency_proxy.py (default 50)")
    ap.add_argument("--haul-before", default=None,
                    help="scale: an older haul binary to measure beside --haul (the `before` column)")
    ap.add_argument("--only-pachyderm-pass", action="store_true",
                    help="scale: only haul with --final-pass pachyderm (not the listing one)")
    ap.add_argument("--no-pachyderm-pass", action="store_true",
                    help="scale: leave out haul with --final-pass pachyderm (a binary before it)")
    ap.add_argument("--bucket-only", action="store_true",
                    help="scale: also run --haul without the databases (the paused pass without dumps beside it)")
    ap.add_argument("--naive-up-to", type=int, default=200_000,
                    help="scale: measure the naive procedure only at object counts up to this (default 200000)")
    ap.add_argument("--wait-idle", type=float, default=0.0, metavar="LOAD",
                    help="scale: before each timed round, wait until the 1-minute load average is below LOAD "
                         "(for long runs beside other work; default: do not wait)")
    ap.add_argument("--haul", default=os.path.join(ROOT, "target", "release", "haul"),
                    help="haul binary (default: target/release/haul, built if missing)")
    ap.add_argument("--probe", default=os.path.join(ROOT, "target", "release", "s3probe"),
                    help="the raw-client probe (default: target/release/s3probe, built if missing)")
    ap.add_argument("--probe-parallel", type=int, default=8,
                    help="objects the raw probes move at once (8 was fastest here; see BENCHMARKS.md)")
    ap.add_argument("--workdir", default=None, help="where data sets are generated (default: /tmp)")
    ap.add_argument("--json-out", help="also write the results as JSON here")
    args = ap.parse_args()
    args.scale = 0.001 if args.smoke else 0.1 if args.quick else 1.0
    if args.scenarios is None:
        args.scenarios = "cluster,downtime,small,large,listing" + (",scale" if args.smoke else "")
    args.objects = args.objects or ("300" if args.smoke else "200000")
    args.db_gb = args.db_gb if args.db_gb is not None else 0.01 if args.smoke else 2.0
    args.scale_runs = args.runs or 2
    args.runs = args.runs or 3
    if args.smoke:
        args.runs = args.scale_runs = 1
    if not (os.path.exists(args.haul) and os.path.exists(args.probe)):
        log("building haul and s3probe (release)")
        subprocess.run(["cargo", "build", "--release", "-p", "haul-cli", "-p", "haul-benches",
                        "--bin", "haul", "--bin", "s3probe"], cwd=ROOT, check=True)
    b = Bench(args)
    try:
        b.start()
        scen = args.scenarios.split(",")
        if "cluster" in scen:
            b.cluster_like()
        if "small" in scen:
            b.many_small()
        if "large" in scen:
            b.large_object()
        if "listing" in scen:
            b.listing_scale()
        if "scale" in scen:
            b.scale()
    finally:
        b.stop()
    print(b.table())
    if b.scale_rows:
        print()
        print(b.scale_table())
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(b.results + [{"scale": r} for r in b.scale_rows], f, indent=2)


if __name__ == "__main__":
    main()
