#!/usr/bin/env bash
# Compatibility test with the official Azure IoT Node SDKs: the device SDK over
# HTTPS, MQTT (8883), MQTT over WebSockets (443), AMQP (5671) and AMQP over
# WebSockets (443), with SAS keys and with self-signed X.509 certificates
# (made with openssl), and the service SDK's registry (HTTPS), C2D send and
# feedback (AMQP and AMQP over WebSockets).
#
# Installs compat/node's pinned npm packages, starts `courier serve` (HTTPS,
# MQTT-over-WebSockets and AMQP-over-WebSockets on 443, MQTT on 8883, AMQP on
# 5671) with a throwaway data dir, runs `node --test` on compat/node, and always
# stops the hub. The ports are not a choice: the SDKs' transports have no port
# setting.
#
# Environment: see scripts/lib/hub.sh (COURIER_BIN, COURIER_COMPAT_SKIP_NONROOT,
# COURIER_COMPAT_KEEP, COURIER_READY_TIMEOUT).
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

HUB_SCRIPT_NAME=compat-node
# shellcheck source=scripts/lib/hub.sh
source "$repo_root/scripts/lib/hub.sh"

hub_require_port_access "the Node SDKs always connect to port 443 (HTTPS, MQTT and AMQP over WebSockets), 8883 (MQTT) and 5671 (AMQP)" 443 8883 5671
hub_require_free_ports 443 8883 5671

command -v node >/dev/null || hub_die "node is not installed (scripts/test-all.sh installs it)"
command -v npm >/dev/null || hub_die "npm is not installed (scripts/test-all.sh installs it)"

# npm ci wipes and reinstalls node_modules; skip it when the lockfile it
# installed from is unchanged.
node_dir=compat/node
lock_sum=$(sha256sum "$node_dir/package-lock.json" | cut -d' ' -f1)
stamp="$node_dir/node_modules/.courier-lock.sha256"
if [[ -f $stamp && $(cat "$stamp") == "$lock_sum" ]]; then
    hub_log "npm packages up to date"
else
    hub_log "npm ci in $node_dir"
    (cd "$node_dir" && npm ci --no-audit --no-fund)
    printf '%s\n' "$lock_sum" >"$stamp"
fi

hub_resolve_bin
hub_start --https-port 443 --mqtt-port 8883 --amqp-port 5671
# The service SDK's REST client and AMQP transport have no CA option; Node
# reads this at start.
export NODE_EXTRA_CA_CERTS=$HUB_DATA_DIR/tls/ca.pem

# One test file at a time: several files read the hub's feedback queue, and a
# reader settles whole batches, which may hold another file's records.
tests=("$node_dir"/*.test.mjs)
status=0
node --test --test-concurrency=1 --test-reporter=spec "${tests[@]}" || status=$?
if [[ $status -eq 0 ]]; then
    hub_log "PASS"
else
    hub_log "FAIL (node --test exited $status)"
fi
exit "$status"
