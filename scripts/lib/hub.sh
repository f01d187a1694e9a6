# shellcheck shell=bash
# Start, wait for and stop a throwaway `courier serve` for the compat scripts.
# Sourced, not run: scripts/compat-node.sh and scripts/compat-python.sh share it
# so both run the hub the same way.
#
# The caller sets HUB_SCRIPT_NAME (prefix of every message) before sourcing,
# runs under `set -euo pipefail`, and then calls, in this order:
#   hub_require_port_access WHY PORT...   exits unless this user may bind each PORT
#   hub_require_free_ports PORT...        exits if something already listens on a PORT
#   hub_resolve_bin                       sets and exports COURIER_BIN (builds it if unset)
#   hub_start SERVE_ARGS...               makes the data dir, installs the EXIT trap,
#                                         starts `courier serve`, waits for run.json
# The data dir is removed when the script exits with 0 and kept (with the hub's
# log tail printed) otherwise.
#
# Environment read here:
#   COURIER_BIN                   courier binary to test (default: target/debug/courier,
#                                 rebuilt with `cargo build -p courier` so it is current)
#   COURIER_COMPAT_SKIP_NONROOT=1 exit 0 instead of 1 when a needed port cannot be bound
#   COURIER_COMPAT_KEEP=1         keep the hub's data dir (and log) after the run
#   COURIER_READY_TIMEOUT         seconds to wait for the hub's run.json (default 30)
#
# Set for the caller (and its children):
#   HUB_DATA_DIR, exported as COURIER_DATA_DIR; HUB_LOG; HUB_PID.

: "${HUB_SCRIPT_NAME:?set HUB_SCRIPT_NAME before sourcing scripts/lib/hub.sh}"

HUB_REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HUB_DATA_DIR=
HUB_LOG=
HUB_PID=

hub_log() { printf '%s: %s\n' "$HUB_SCRIPT_NAME" "$*"; }
hub_die() {
    printf '%s: %s\n' "$HUB_SCRIPT_NAME" "$*" >&2
    exit 1
}

# Exits (or, with COURIER_COMPAT_SKIP_NONROOT=1, skips the whole script) unless
# every PORT can be bound: ports below the unprivileged start need root,
# CAP_NET_BIND_SERVICE, or a lowered net.ipv4.ip_unprivileged_port_start.
hub_require_port_access() {
    local why=$1
    shift
    local unprivileged_start port
    unprivileged_start=$(cat /proc/sys/net/ipv4/ip_unprivileged_port_start 2>/dev/null || echo 1024)
    [[ $(id -u) -eq 0 ]] && return 0
    for port in "$@"; do
        if ((port < unprivileged_start)); then
            printf '%s: %s, and port %s needs root here\n' "$HUB_SCRIPT_NAME" "$why" "$port" >&2
            printf '%s: (uid %s, net.ipv4.ip_unprivileged_port_start=%s).\n' \
                "$HUB_SCRIPT_NAME" "$(id -u)" "$unprivileged_start" >&2
            if [[ ${COURIER_COMPAT_SKIP_NONROOT:-0} == 1 ]]; then
                hub_log "SKIPPED (COURIER_COMPAT_SKIP_NONROOT=1)"
                exit 0
            fi
            hub_die "run as root, or set COURIER_COMPAT_SKIP_NONROOT=1 to skip"
        fi
    done
}

# Exits naming the listener if something already listens on one of the TCP
# PORTs (another hub, or a compat run in progress): the hub would fail to bind,
# and this says why before a build. Without `ss` the hub's own bind error (in
# the log tail printed on failure) has to do.
hub_require_free_ports() {
    command -v ss >/dev/null || return 0
    local port listeners busy=0
    for port in "$@"; do
        listeners=$(ss -Hltnp "sport = :$port" 2>/dev/null || true)
        if [[ -n $listeners ]]; then
            printf '%s: port %s is in use:\n%s\n' "$HUB_SCRIPT_NAME" "$port" "$listeners" >&2
            busy=1
        fi
    done
    ((busy == 0)) || hub_die "the hub needs these ports; stop what listens there (or wait for it), then rerun"
}

# Sets COURIER_BIN to an absolute path and exports it.
hub_resolve_bin() {
    if [[ -n ${COURIER_BIN:-} ]]; then
        [[ -x $COURIER_BIN ]] || hub_die "COURIER_BIN=$COURIER_BIN is not an executable"
    else
        # Always build: a no-op when current, and it never tests a stale binary.
        hub_log "cargo build -p courier"
        (cd "$HUB_REPO_ROOT" && cargo build -p courier)
        COURIER_BIN=$HUB_REPO_ROOT/target/debug/courier
    fi
    COURIER_BIN=$(cd "$(dirname "$COURIER_BIN")" && pwd)/$(basename "$COURIER_BIN")
    export COURIER_BIN
}

# True when FILE holds a complete JSON document. The hub writes run.json by
# rename, but a reader must not trust a half-written file from an older hub.
hub__json_complete() {
    local file=$1
    [[ -s $file ]] || return 1
    if command -v python3 >/dev/null; then
        python3 -c 'import json, sys; json.load(open(sys.argv[1], encoding="utf-8"))' "$file" 2>/dev/null
    elif command -v node >/dev/null; then
        node -e 'JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"))' "$file" 2>/dev/null
    else
        # Neither parser: a non-empty file is the best evidence available.
        return 0
    fi
}

# Stops the hub: SIGTERM, then SIGKILL after 10 s. Safe to call twice.
hub_stop() {
    if [[ -n $HUB_PID ]] && kill -0 "$HUB_PID" 2>/dev/null; then
        kill -TERM "$HUB_PID" 2>/dev/null || true
        local waited=0
        while kill -0 "$HUB_PID" 2>/dev/null && ((waited < 100)); do
            sleep 0.1
            waited=$((waited + 1))
        done
        if kill -0 "$HUB_PID" 2>/dev/null; then
            hub_log "hub (pid $HUB_PID) ignored SIGTERM for 10 s; killing it"
            kill -KILL "$HUB_PID" 2>/dev/null || true
        fi
        wait "$HUB_PID" 2>/dev/null || true
    fi
    HUB_PID=
}

# The EXIT trap: stops the hub, shows its log on failure, removes or keeps the data dir.
# shellcheck disable=SC2317 # reached through the EXIT trap
hub__on_exit() {
    local status=$1
    hub_stop
    [[ -n $HUB_DATA_DIR ]] || return 0
    if [[ $status -ne 0 && -s $HUB_LOG ]]; then
        printf '%s: last lines of the hub log (%s):\n' "$HUB_SCRIPT_NAME" "$HUB_LOG" >&2
        tail -n 40 "$HUB_LOG" >&2 || true
    fi
    if [[ ${COURIER_COMPAT_KEEP:-0} == 1 || $status -ne 0 ]]; then
        hub_log "hub data dir kept: $HUB_DATA_DIR"
    else
        rm -rf "$HUB_DATA_DIR"
    fi
}

# Starts `$COURIER_BIN serve` on 127.0.0.1 as host `localhost` (the name the
# SDKs verify the certificate against) in a new data dir, with SERVE_ARGS
# appended, and returns once the hub has written run.json, which it does after
# every listener accepts connections.
hub_start() {
    [[ -n ${COURIER_BIN:-} ]] || hub_die "hub_start: call hub_resolve_bin first"
    HUB_DATA_DIR=$(mktemp -d "${TMPDIR:-/tmp}/courier-$HUB_SCRIPT_NAME.XXXXXX")
    HUB_LOG=$HUB_DATA_DIR/courier.log
    export COURIER_DATA_DIR=$HUB_DATA_DIR
    trap 'hub__on_exit "$?"' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    hub_log "starting $COURIER_BIN serve $* (data dir $HUB_DATA_DIR)"
    "$COURIER_BIN" serve --data-dir "$HUB_DATA_DIR" --hostname localhost --bind 127.0.0.1 "$@" \
        >"$HUB_LOG" 2>&1 &
    HUB_PID=$!

    # Poll for run.json, but give up early if the hub has already exited.
    local ready_timeout=${COURIER_READY_TIMEOUT:-30}
    local deadline=$((SECONDS + ready_timeout)) rc
    until hub__json_complete "$HUB_DATA_DIR/run.json"; do
        if ! kill -0 "$HUB_PID" 2>/dev/null; then
            wait "$HUB_PID" && rc=0 || rc=$?
            HUB_PID=
            hub_die "courier serve exited (status $rc) before it was ready"
        fi
        ((SECONDS < deadline)) || hub_die "courier serve did not write $HUB_DATA_DIR/run.json within ${ready_timeout}s"
        sleep 0.1
    done
    hub_log "hub ready: $(tr -d '\n' <"$HUB_DATA_DIR/run.json")"
}
