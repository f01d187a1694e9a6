#!/usr/bin/env bash
# Compatibility test with the official Azure IoT Node device SDK over HTTPS.
#
# Installs compat/node's pinned npm packages, starts `courier serve` on port 443
# with a throwaway data dir, runs `node --test` on compat/node, and always stops
# the hub. Port 443 is not a choice: the SDK's HTTP transport has no port setting.
#
# Environment:
#   COURIER_BIN                   courier binary to test (default: target/debug/courier,
#                                 rebuilt with `cargo build -p courier` so it is current)
#   COURIER_COMPAT_SKIP_NONROOT=1 exit 0 instead of 1 when port 443 cannot be bound
#   COURIER_COMPAT_KEEP=1         keep the hub's data dir (and log) after the run
#   COURIER_READY_TIMEOUT         seconds to wait for the hub's run.json (default 30)
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

log() { printf 'compat-node: %s\n' "$*"; }
die() { printf 'compat-node: %s\n' "$*" >&2; exit 1; }

# Binding 443 needs root, CAP_NET_BIND_SERVICE, or a lowered unprivileged port range.
unprivileged_start=$(cat /proc/sys/net/ipv4/ip_unprivileged_port_start 2>/dev/null || echo 1024)
if [[ $(id -u) -ne 0 && $unprivileged_start -gt 443 ]]; then
    printf 'compat-node: the Node SDK over HTTP always connects to port 443, which needs root here\n' >&2
    printf 'compat-node: (uid %s, net.ipv4.ip_unprivileged_port_start=%s).\n' "$(id -u)" "$unprivileged_start" >&2
    if [[ ${COURIER_COMPAT_SKIP_NONROOT:-0} == 1 ]]; then
        log "SKIPPED (COURIER_COMPAT_SKIP_NONROOT=1)"
        exit 0
    fi
    die "run as root, or set COURIER_COMPAT_SKIP_NONROOT=1 to skip"
fi

command -v node >/dev/null || die "node is not installed (scripts/test-all.sh installs it)"
command -v npm >/dev/null || die "npm is not installed (scripts/test-all.sh installs it)"

# npm ci wipes and reinstalls node_modules; skip it when the lockfile it
# installed from is unchanged.
node_dir=compat/node
lock_sum=$(sha256sum "$node_dir/package-lock.json" | cut -d' ' -f1)
stamp="$node_dir/node_modules/.courier-lock.sha256"
if [[ -f $stamp && $(cat "$stamp") == "$lock_sum" ]]; then
    log "npm packages up to date"
else
    log "npm ci in $node_dir"
    (cd "$node_dir" && npm ci --no-audit --no-fund)
    printf '%s\n' "$lock_sum" >"$stamp"
fi

if [[ -n ${COURIER_BIN:-} ]]; then
    [[ -x $COURIER_BIN ]] || die "COURIER_BIN=$COURIER_BIN is not an executable"
else
    # Always build: a no-op when current, and it never tests a stale binary.
    log "cargo build -p courier"
    cargo build -p courier
    COURIER_BIN=$repo_root/target/debug/courier
fi
COURIER_BIN=$(cd "$(dirname "$COURIER_BIN")" && pwd)/$(basename "$COURIER_BIN")
export COURIER_BIN

data_dir=$(mktemp -d "${TMPDIR:-/tmp}/courier-compat-node.XXXXXX")
export COURIER_DATA_DIR=$data_dir
# The service SDK's REST client has no CA option; Node reads this at start.
export NODE_EXTRA_CA_CERTS=$data_dir/tls/ca.pem
hub_log=$data_dir/courier.log
hub_pid=
status=1

# shellcheck disable=SC2317 # reached through the EXIT trap
stop_hub() {
    if [[ -n $hub_pid ]] && kill -0 "$hub_pid" 2>/dev/null; then
        kill -TERM "$hub_pid" 2>/dev/null || true
        local waited=0
        while kill -0 "$hub_pid" 2>/dev/null && ((waited < 100)); do
            sleep 0.1
            waited=$((waited + 1))
        done
        if kill -0 "$hub_pid" 2>/dev/null; then
            log "hub (pid $hub_pid) ignored SIGTERM for 10 s; killing it"
            kill -KILL "$hub_pid" 2>/dev/null || true
        fi
        wait "$hub_pid" 2>/dev/null || true
    fi
    hub_pid=
}

# shellcheck disable=SC2317 # reached through the EXIT trap
cleanup() {
    stop_hub
    if [[ $status -ne 0 && -s $hub_log ]]; then
        printf 'compat-node: last lines of the hub log (%s):\n' "$hub_log" >&2
        tail -n 40 "$hub_log" >&2 || true
    fi
    if [[ ${COURIER_COMPAT_KEEP:-0} == 1 || $status -ne 0 ]]; then
        log "hub data dir kept: $data_dir"
    else
        rm -rf "$data_dir"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "starting $COURIER_BIN serve (data dir $data_dir)"
"$COURIER_BIN" serve --data-dir "$data_dir" --hostname localhost --bind 127.0.0.1 --https-port 443 \
    >"$hub_log" 2>&1 &
hub_pid=$!

# The hub writes run.json once it accepts connections; poll for it, but give up
# early if the hub has already exited.
ready_timeout=${COURIER_READY_TIMEOUT:-30}
deadline=$((SECONDS + ready_timeout))
until [[ -s $data_dir/run.json ]] && node -e 'JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"))' "$data_dir/run.json" 2>/dev/null; do
    if ! kill -0 "$hub_pid" 2>/dev/null; then
        wait "$hub_pid" && rc=0 || rc=$?
        hub_pid=
        die "courier serve exited (status $rc) before it was ready"
    fi
    ((SECONDS < deadline)) || die "courier serve did not write $data_dir/run.json within ${ready_timeout}s"
    sleep 0.1
done
log "hub ready: $(cat "$data_dir/run.json")"

tests=("$node_dir"/*.test.mjs)
node --test --test-reporter=spec "${tests[@]}" && status=0 || status=$?
if [[ $status -eq 0 ]]; then
    log "PASS"
else
    log "FAIL (node --test exited $status)"
fi
exit "$status"
