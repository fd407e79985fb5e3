"""A fake Pachyderm cluster for haul's integration tests.

The fake `kubectl` and `pachctl` beside this file are thin wrappers around
`main`; tests/cluster_rig.rs puts them first on PATH and drives the state.

State lives in the directory $FAKE_CLUSTER_DIR:
  state.json  the cluster (shape: `initial_state` in tests/cluster_rig.rs)
  lock        flock'd exclusively around every read and write of the state,
              by these fakes, by the Rust rig and by its writer
  calls.log   one JSON array per invocation: the tool's name, then its args

With FAKE_HOLD_PAUSE=DIR, the first `kubectl scale … --replicas=0` creates
DIR/held and waits (up to 120 s, before taking the lock) for DIR/release:
the test plays the application's last writes before it stops.

Exit codes: 0 done; 1 an error a real tool would report, worded like it;
2 a command this fake does not know, which is a haul bug or a missing fake
feature, and meant to be loud.
"""

import fcntl
import json
import os
import sys
import time

DEPLOYMENT = {"deployment", "deployments", "deploy", "deployment.apps", "deployments.apps"}
RC = {"replicationcontroller", "replicationcontrollers", "rc"}
POD = {"pod", "pods", "po"}
WORKER_SELECTOR = frozenset({"suite=pachyderm", "component=worker"})
# Deployments whose `app=` selector is known even when the state lacks them
# (a cluster without an enterprise server lists no pods, like kubectl).
KNOWN_APPS = {"pachd", "pach-enterprise"}


class Exit(Exception):
    """Ends the command with `code`, printing `stderr`."""

    def __init__(self, code, stderr):
        super().__init__(stderr)
        self.code = code
        self.stderr = stderr


def unknown(tool, args, why="unknown command"):
    return Exit(2, f"fake {tool}: {why}: {' '.join(args)!r} (extend tests/fakes/fakecluster.py?)")


def main(tool, args):
    root = os.environ.get("FAKE_CLUSTER_DIR")
    if not root:
        sys.stderr.write(f"fake {tool}: FAKE_CLUSTER_DIR is not set\n")
        return 2
    hold_before_pause(tool, args)
    out, code, err = [], 0, ""
    lock = os.open(os.path.join(root, "lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with open(os.path.join(root, "calls.log"), "a", encoding="utf-8") as log:
            log.write(json.dumps([tool] + args) + "\n")
        path = os.path.join(root, "state.json")
        with open(path, encoding="utf-8") as f:
            before = f.read()
        state = json.loads(before)
        try:
            if tool == "kubectl":
                kubectl(state, args, out)
            else:
                pachctl(state, args, out)
        except Exit as e:
            code, err = e.code, e.stderr
        after = json.dumps(state, indent=1)
        if after != before:
            # Replace, never rewrite in place: a reader without the lock
            # (someone debugging) never sees half a file.
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                f.write(after)
            os.replace(path + ".tmp", path)
    finally:
        os.close(lock)
    sys.stdout.write("".join(out))
    if err:
        sys.stderr.write(err if err.endswith("\n") else err + "\n")
    return code


def hold_before_pause(tool, args):
    """See FAKE_HOLD_PAUSE in the module doc."""
    hold = os.environ.get("FAKE_HOLD_PAUSE")
    if not hold or tool != "kubectl" or "scale" not in args or "--replicas=0" not in args:
        return
    held = os.path.join(hold, "held")
    if os.path.exists(held):
        return
    open(held, "w", encoding="utf-8").close()
    deadline = time.time() + 120
    while not os.path.exists(os.path.join(hold, "release")):
        if time.time() > deadline:
            raise SystemExit("fake kubectl: FAKE_HOLD_PAUSE: no release within 120 s")
        time.sleep(0.05)


def inject_failure(state, words):
    """Fails the call if an armed `fail` entry matches the command line.

    A pattern matches as a substring of the words joined by spaces; a
    trailing `$` anchors it to the end (`enterprise pause$` leaves
    `enterprise pause-status` alone).
    """
    line = " ".join(words)
    for rule in state.get("fail", []):
        pattern = rule["match"]
        hit = line.endswith(pattern[:-1]) if pattern.endswith("$") else pattern in line
        if hit and rule.get("times", -1) != 0:
            if rule.get("times", -1) > 0:
                rule["times"] -= 1
            raise Exit(1, rule.get("stderr", "injected failure"))


# ---------------------------------------------------------------- kubectl


def kubectl(state, args, out):
    context, rest, i = None, [], 0
    while i < len(args):
        a = args[i]
        name, eq, value = a.partition("=")
        if name in ("--context", "--namespace", "-n"):
            if not eq:
                if i + 1 >= len(args):
                    raise Exit(1, f"error: flag needs an argument: {name}")
                value = args[i + 1]
                i += 1
            if name == "--context":
                context = value
            # The fake has one namespace: any name is accepted, and the
            # calls log shows which one haul passed.
        else:
            rest.append(a)
        i += 1
    context = context or state.get("current_context")
    if not context:
        raise Exit(1, "error: current-context is not set")
    if context not in state.get("contexts", []):
        raise Exit(1, f'error: context "{context}" does not exist')
    inject_failure(state, ["kubectl"] + rest)
    if not rest:
        raise unknown("kubectl", rest)
    verb = rest[0]
    if verb == "get":
        get(state, rest, out)
    elif verb == "scale":
        scale(state, rest, out)
    elif verb == "apply" and rest[1:] == ["-f", "-"]:
        apply(state, json.load(sys.stdin), out)
    elif verb == "delete" and len(rest) >= 3 and rest[1] in ("job", "jobs", "job.batch"):
        delete_job(state, rest[2], "--ignore-not-found" in rest, out)
    else:
        raise unknown("kubectl", rest)


def apply(state, doc, out):
    """`kubectl apply -f -` of an Indexed Job (JSON): runs its pods as local
    processes, one per index, each with JOB_COMPLETION_INDEX set, like the
    Job controller would (retries aside). The container's image is
    $FAKE_IMAGE_BIN (the haul binary under test); a volume's mountPath is
    mapped to a local folder by $FAKE_KUBE_MOUNTS (`/etc/haul=/tmp/x,...`);
    the pods' environment is this process's (standing in for the Secrets)."""
    import subprocess

    if doc.get("kind") != "Job" or doc.get("apiVersion") != "batch/v1":
        raise unknown("kubectl", ["apply", doc.get("kind", "?")], "only batch/v1 Jobs can be applied")
    spec = doc["spec"]
    if spec.get("completionMode") != "Indexed":
        raise unknown("kubectl", ["apply", "Job"], "only Indexed Jobs are run")
    name = doc["metadata"]["name"]
    if name in state.get("jobs", {}):
        raise Exit(1, f'Error from server (AlreadyExists): jobs.batch "{name}" already exists')
    mounts = dict(m.split("=", 1) for m in os.environ.get("FAKE_KUBE_MOUNTS", "").split(",") if m)
    container = spec["template"]["spec"]["containers"][0]

    def local(arg):
        for inside, outside in mounts.items():
            arg = arg.replace(inside, outside)
        return arg

    cmd = [os.environ["FAKE_IMAGE_BIN"]] + [local(a) for a in container.get("args", [])]
    logs = os.path.join(os.environ["FAKE_CLUSTER_DIR"], f"job-{name}")
    os.makedirs(logs, exist_ok=True)
    pids = []
    for k in range(spec["completions"]):
        env = dict(os.environ, JOB_COMPLETION_INDEX=str(k))
        for e in container.get("env", []):
            if "value" in e:
                env[e["name"]] = e["value"]
        with open(os.path.join(logs, f"{k}.out"), "wb") as o, open(os.path.join(logs, f"{k}.err"), "wb") as e:
            p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=o, stderr=e,
                                 start_new_session=True)
        pids.append(p.pid)
    state.setdefault("jobs", {})[name] = {"pids": pids, "completions": spec["completions"]}
    out.append(f"job.batch/{name} created\n")


def delete_job(state, name, ignore_missing, out):
    """`kubectl delete job NAME`: its pods (processes) are killed."""
    import signal

    job = state.get("jobs", {}).pop(name, None)
    if job is None:
        if ignore_missing:
            return
        raise Exit(1, f'Error from server (NotFound): jobs.batch "{name}" not found')
    for pid in job["pids"]:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    out.append(f'job.batch "{name}" deleted\n')


def parse_flags(rest, known):
    """Positional words and the values of `known` flags (short and long
    spellings, `-o json`, `-ojson`, `-o=json`, `--output=json`)."""
    positional, flags, i = [], {}, 0
    while i < len(rest):
        a = rest[i]
        for canonical, spellings in known.items():
            hit = None
            for s in spellings:
                if a == s:
                    if i + 1 >= len(rest):
                        raise Exit(1, f"error: flag needs an argument: {a}")
                    hit = rest[i + 1]
                    i += 1
                elif a.startswith(s + "="):
                    hit = a[len(s) + 1 :]
                elif len(s) == 2 and a.startswith(s) and not a.startswith("--"):
                    hit = a[2:]
                if hit is not None:
                    break
            if hit is not None:
                flags[canonical] = hit
                break
        else:
            if a.startswith("-"):
                raise unknown("kubectl", rest, f"unknown flag {a}")
            positional.append(a)
        i += 1
    return positional, flags


def get(state, rest, out):
    words, flags = parse_flags(rest[1:], {"output": ["-o", "--output"], "selector": ["-l", "--selector"]})
    if flags.get("output") != "json":
        raise unknown("kubectl", rest, "only `-o json` is faked")
    if not words:
        raise Exit(1, "error: You must specify the type of resource to get.")
    resource, names = words[0], words[1:]
    selector = flags.get("selector")
    now = time.time()
    if resource in DEPLOYMENT and len(names) == 1 and selector is None:
        name = names[0]
        replicas = state["deployments"].get(name)
        if replicas is None:
            raise Exit(1, f'Error from server (NotFound): deployments.apps "{name}" not found')
        pods = len(pods_of(state, "deployment", name, now))
        status = {"replicas": pods, "observedGeneration": 1}
        if replicas > 0:
            status.update(readyReplicas=replicas, availableReplicas=replicas, updatedReplicas=replicas)
        emit(out, {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "labels": {"app": name, "suite": "pachyderm"}},
            "spec": {"replicas": replicas},
            "status": status,
        })
    elif resource in RC and not names and selector is not None:
        if labels(selector) != WORKER_SELECTOR:
            raise unknown("kubectl", rest, f"no replication controllers for selector {selector!r}")
        emit(out, items([
            {
                "kind": "ReplicationController",
                "metadata": {"name": name, "labels": worker_labels(name)},
                "spec": {"replicas": replicas},
                "status": {"replicas": len(pods_of(state, "rc", name, now))},
            }
            for name, replicas in sorted(state["rcs"].items())
        ]))
    elif resource in POD and not names and selector is not None:
        wanted = labels(selector)
        if wanted == WORKER_SELECTOR:
            pods = [p for name in sorted(state["rcs"]) for p in pods_of(state, "rc", name, now)]
        elif len(wanted) == 1 and next(iter(wanted)).startswith("app="):
            app = next(iter(wanted))[len("app=") :]
            if app not in KNOWN_APPS and app not in state["deployments"]:
                raise unknown("kubectl", rest, f"no deployment behind selector {selector!r}")
            pods = pods_of(state, "deployment", app, now) if app in state["deployments"] else []
        else:
            raise unknown("kubectl", rest, f"unknown pod selector {selector!r}")
        emit(out, items(pods))
    else:
        raise unknown("kubectl", rest)


def scale(state, rest, out):
    words, flags = parse_flags(rest[1:], {"replicas": ["--replicas"]})
    if len(words) == 1 and "/" in words[0]:
        words = words[0].split("/", 1)
    if len(words) != 2:
        raise unknown("kubectl", rest, "expected `scale TYPE NAME --replicas=N`")
    resource, name = words
    if "replicas" not in flags:
        raise Exit(1, 'error: required flag(s) "replicas" not set')
    try:
        replicas = int(flags["replicas"])
    except ValueError:
        raise Exit(1, f'error: invalid argument "{flags["replicas"]}" for "--replicas" flag') from None
    if replicas < 0:
        raise Exit(1, "error: The --replicas=COUNT flag is required, and COUNT must be greater than or equal to 0")
    if resource in DEPLOYMENT:
        kind, table, shown, missing = "deployment", "deployments", "deployment.apps", "deployments.apps"
    elif resource in RC:
        kind, table, shown, missing = "rc", "rcs", "replicationcontroller", "replicationcontrollers"
    else:
        raise unknown("kubectl", rest, f"cannot scale {resource!r}")
    before = state[table].get(name)
    if before is None:
        raise Exit(1, f'Error from server (NotFound): {missing} "{name}" not found')
    state[table][name] = replicas
    zeroed = state.setdefault("scaled_to_zero", {})
    key = f"{kind}/{name}"
    if replicas == 0 and before > 0:
        # Its pods terminate over pod_linger_s from now.
        zeroed[key] = {"at": time.time(), "from": before}
    elif replicas > 0:
        zeroed.pop(key, None)
    out.append(f"{shown}/{name} scaled\n")


def pods_of(state, kind, name, now):
    """The pods of a deployment or rc: its replicas while it has any, then
    the old ones, terminating, for pod_linger_s (forever if negative)."""
    table = "deployments" if kind == "deployment" else "rcs"
    replicas = state[table].get(name, 0)
    terminating = False
    if replicas <= 0:
        zeroed = state.get("scaled_to_zero", {}).get(f"{kind}/{name}")
        linger = state.get("pod_linger_s", 0)
        if not zeroed or (linger >= 0 and now - zeroed["at"] >= linger):
            return []
        replicas, terminating = zeroed["from"], True
    pods = []
    for i in range(replicas):
        if kind == "deployment":
            pod_labels = {"app": name, "suite": "pachyderm"}
            pod_name = f"{name}-5c8f9d7b6-{i:05d}"
        else:
            pod_labels = worker_labels(name)
            pod_name = f"{name}-{i:05d}"
        meta = {"name": pod_name, "labels": pod_labels}
        if terminating:
            meta["deletionTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        pods.append({"kind": "Pod", "metadata": meta, "status": {"phase": "Running"}})
    return pods


def worker_labels(rc):
    return {"suite": "pachyderm", "component": "worker", "app": rc}


def labels(selector):
    return frozenset(s.strip() for s in selector.split(",") if s.strip())


def items(objects):
    return {"apiVersion": "v1", "kind": "List", "items": objects, "metadata": {"resourceVersion": ""}}


def emit(out, obj):
    out.append(json.dumps(obj, indent=4) + "\n")


# ---------------------------------------------------------------- pachctl


def pachctl(state, args, out):
    inject_failure(state, ["pachctl"] + args)
    ctl = state.setdefault("pachctl", {})
    if args in (["config", "get", "active-context"], ["config", "get", "active-enterprise-context"]):
        key = args[2].replace("-", "_")
        if not ctl.get(key):
            what = "enterprise context" if "enterprise" in key else "context"
            raise Exit(1, f"no active {what}")
        out.append(ctl[key] + "\n")
    elif args == ["enterprise", "pause"]:
        if state.get("paused") == "unpaused":
            state["paused"], state["paused_at"] = "paused", time.time()
    elif args == ["enterprise", "unpause"]:
        state["paused"], state["paused_at"] = "unpaused", None
    elif args == ["enterprise", "pause-status"]:
        out.append(pause_status(state) + "\n")
    else:
        raise unknown("pachctl", args)


def pause_status(state):
    """`paused` is what was asked; the status passes through
    partially-paused for pod_linger_s (forever if negative)."""
    paused = state.get("paused", "unpaused")
    if paused != "paused":
        return paused
    linger = state.get("pod_linger_s", 0)
    if linger < 0 or time.time() - (state.get("paused_at") or 0) < linger:
        return "partially-paused"
    return "paused"
