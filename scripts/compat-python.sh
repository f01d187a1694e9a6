#!/usr/bin/env bash
# Compatibility test with the official Azure IoT Python SDKs: the device SDK over
# MQTT (8883) and MQTT over WebSockets (443), and the service SDK's registry
# (HTTPS) and C2D send over AMQP (5671) and AMQP over WebSockets (443).
#
# Creates compat/python/.venv (git-ignored) and installs compat/python's pinned
# requirements into it when they changed, starts `courier serve` (MQTT on 8883,
# AMQP on 5671, HTTPS and MQTT/AMQP-over-WebSockets on 443) with a throwaway
# data dir, runs pytest on compat/python, and always stops the hub. The ports
# are not a choice: the SDKs hard-code them.
#
# Environment: see scripts/lib/hub.sh (COURIER_BIN, COURIER_COMPAT_SKIP_NONROOT,
# COURIER_COMPAT_KEEP, COURIER_READY_TIMEOUT), and
#   COURIER_PYTHON   interpreter that creates the venv (default: python3)
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

HUB_SCRIPT_NAME=compat-python
# shellcheck source=scripts/lib/hub.sh
source "$repo_root/scripts/lib/hub.sh"

hub_require_port_access "the Python SDKs always connect to port 8883 (MQTT), 5671 (AMQP) and 443 (HTTPS, MQTT and AMQP over WebSockets)" 443 8883 5671
hub_require_free_ports 443 8883 5671

python=${COURIER_PYTHON:-python3}
command -v "$python" >/dev/null || hub_die "$python is not installed (scripts/test-all.sh installs python3)"

py_dir=compat/python
venv=$py_dir/.venv

# Creates the venv. Debian's python3 lacks ensurepip until python3-venv is
# installed, so on a failure we install it (root only) and try once more.
create_venv() {
    rm -rf "$venv"
    "$python" -m venv "$venv" && return 0
    rm -rf "$venv"
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
        hub_die "'$python -m venv' failed: install python3-venv (apt-get install python3-venv), then rerun"
    fi
    hub_log "'$python -m venv' failed; apt: installing python3-venv"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv
    "$python" -m venv "$venv"
}

# A venv whose interpreter no longer runs (the base Python moved or was upgraded)
# is rebuilt; so is one made by another interpreter than the one asked for now.
want_version=$("$python" -c 'import sys; print(sys.version)')
if [[ -x $venv/bin/python ]] && [[ $("$venv/bin/python" -c 'import sys; print(sys.version)' 2>/dev/null) == "$want_version" ]]; then
    :
else
    hub_log "creating $venv with $python ($("$python" --version 2>&1))"
    create_venv
fi

# pip install only when the requirements (or the interpreter) changed since the
# last install into this venv.
req_sum=$( (cat "$py_dir/requirements.txt"; printf '%s\n' "$want_version") | sha256sum | cut -d' ' -f1)
stamp=$venv/.courier-requirements.sha256
if [[ -f $stamp && $(cat "$stamp") == "$req_sum" ]]; then
    hub_log "Python packages up to date"
else
    hub_log "pip install -r $py_dir/requirements.txt"
    "$venv/bin/python" -m pip install --disable-pip-version-check --no-input --quiet -r "$py_dir/requirements.txt"
    printf '%s\n' "$req_sum" >"$stamp"
fi

hub_resolve_bin
hub_start --https-port 443 --mqtt-port 8883 --amqp-port 5671
# The service SDK's REST client (requests) trusts the hub's CA through this.
# Its AMQP client (uAMQP) ignores it: test_amqp_service.py points uAMQP at
# the CA itself (see the note there).
export REQUESTS_CA_BUNDLE=$COURIER_DATA_DIR/tls/ca.pem

status=0
(cd "$py_dir" && PYTHONDONTWRITEBYTECODE=1 .venv/bin/python -m pytest -vv) || status=$?
if [[ $status -eq 0 ]]; then
    hub_log "PASS"
else
    hub_log "FAIL (pytest exited $status)"
fi
exit "$status"
