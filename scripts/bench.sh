#!/usr/bin/env bash
# The benchmark suite behind BENCHMARKS.md: Courier, and Mosquitto for the
# comparison, on this machine, in one run. Every figure goes to a JSON file
# under the results directory; a summary table is printed (and written to
# summary.md) at the end. Not a test: nothing here fails on a figure.
#
#   scripts/bench.sh [--quick] [--runs N] [--only a,b,c,d,e] [--out DIR]
#                    [--no-build] [--no-drop-caches]
#   scripts/bench.sh --summary DIR      print an earlier run's summary again
#
#   (a) 1,000 devices × 100 messages, flat out: 64 AMQP senders (pipelined on 4
#       connections, as the official service SDKs send) → hub → MQTT/TLS devices;
#       once more with 256 senders, once with 64 HTTPS senders, and once
#       each with the devices on AMQP and on HTTPS (through the Rust SDK)
#   (b) latency at fixed send rates (5,000 and 10,000 msg/s), Courier and Mosquitto
#   (c) idle MQTT/TLS connections (100,000, or as many as the open-files hard
#       limit allows), hub RSS per connection
#   (d) 1,000,000 messages queued over 100,000 devices, kill -9, time until the
#       hub serves again (page cache warm, then dropped)
#   (e) Mosquitto (TLS, persistent sessions, QoS 1) on (a), alternating with
#       Courier run by run; the Courier/Mosquitto ratio
#
# --quick shrinks everything for a smoke run of the script itself: (a)/(e)
# 200 × 50, (b) 1,000 and 2,000 msg/s, (c) 2,000 connections, (d) 10,000 × 10.
# --runs N repeats (a)/(e) N times (default 3; 1 with --quick); the summary
# shows medians.
#
# Installs what is missing (mosquitto, jq) with apt, builds the release
# binary (unless --no-build or COURIER_BIN is set), raises `ulimit -n` to the
# hard limit, and starts every hub and broker itself on 127.0.0.1 with free
# ports; each measurement gets a fresh hub (or broker) and data directory.
#
# Environment: COURIER_BIN (a courier binary to use as it is), CARGO_TARGET_DIR.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

quick=0 runs='' only=a,b,c,d,e out='' build=1 drop_caches=1 summary_only=''
while (($# > 0)); do
    case $1 in
    --quick) quick=1 ;;
    --runs) runs=$2 && shift ;;
    --only) only=$2 && shift ;;
    --out) out=$2 && shift ;;
    --no-build) build=0 ;;
    --no-drop-caches) drop_caches=0 ;;
    --summary) summary_only=$2 && shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' && exit 0 ;;
    *) echo "bench.sh: unknown argument $1 (see --help)" >&2 && exit 2 ;;
    esac
    shift
done
want() { [[ ,$only, == *,$1,* ]]; }

if ((quick)); then
    a_devices=200 a_messages=50 rates=(1000 2000)
    idle_target=2000 fill_devices=10000 fill_messages=10
    runs=${runs:-1}
else
    a_devices=1000 a_messages=100 rates=(5000 10000)
    idle_target=100000 fill_devices=100000 fill_messages=10
    runs=${runs:-3}
fi

log() { printf '\n== %s\n' "$*"; }
die() {
    printf 'bench.sh: %s\n' "$*" >&2
    exit 1
}
as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        die "need root to run: $*"
    fi
}
load() { cut -d' ' -f1-3 /proc/loadavg; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# --- what the suite needs -------------------------------------------------
mosquitto_bin() {
    command -v mosquitto || { [[ -x /usr/sbin/mosquitto ]] && echo /usr/sbin/mosquitto; } || true
}

prepare() {
    local missing=()
    [[ -n $(mosquitto_bin) ]] || missing+=(mosquitto)
    command -v jq >/dev/null || missing+=(jq)
    if ((${#missing[@]} > 0)); then
        log "apt: installing ${missing[*]}"
        as_root apt-get update
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
    fi
    mosquitto=$(mosquitto_bin)
    [[ -n $mosquitto ]] || die "mosquitto is not installed"

    if [[ -n ${COURIER_BIN:-} ]]; then
        bin=$COURIER_BIN
    else
        bin=${CARGO_TARGET_DIR:-$repo_root/target}/release/courier
        if ((build)); then
            log "cargo build --release -p courier"
            cargo build --release -p courier
        fi
    fi
    [[ -x $bin ]] || die "no courier binary at $bin (build it, or set COURIER_BIN)"

    # Each connection is a file descriptor in the hub and in the load generator.
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    nofile=$(ulimit -n)

    jq -n --arg cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
        --argjson cores "$(nproc)" \
        --arg mem "$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)" \
        --arg kernel "$(uname -r)" --arg nofile "$nofile" --arg courier "$("$bin" --version)" \
        --arg commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
        --arg mosquitto "$("$mosquitto" -h 2>/dev/null | head -1)" \
        --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --arg load "$(load)" --argjson quick "$quick" \
        '{date: $date, cpu: $cpu, cores: $cores, memory: $mem, kernel: $kernel,
          openFilesLimit: $nofile, courier: $courier, commit: $commit, mosquitto: $mosquitto,
          loadAtStart: $load, quick: ($quick == 1)}' >"$out/machine.json"
    log "results in $out ($(jq -r '"\(.cores) cores, \(.memory), \(.cpu); load \(.loadAtStart); ulimit -n \(.openFilesLimit)"' "$out/machine.json"))"
}

# --- hubs and brokers -----------------------------------------------------
hub_pid='' hub_dir='' mosq_pid='' mosq_tls_port='' mosq_plain_port=''
cleanup() {
    if [[ -n $hub_pid ]]; then kill -9 "$hub_pid" 2>/dev/null || true; fi
    if [[ -n $mosq_pid ]]; then kill "$mosq_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT

# A TCP port on 127.0.0.1 that nothing listens on, from $1 up.
free_port() {
    local port
    for ((port = $1; port < 60000; port++)); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    die "no free port"
}

# hub_start NAME [serve flags…]: a fresh hub in $out/NAME/data.
hub_start() {
    hub_dir=$out/$1/data
    shift
    rm -rf "$hub_dir"
    mkdir -p "$(dirname "$hub_dir")"
    hub_launch "$@"
}

# Starts `courier serve` on $hub_dir and waits until run.json names it.
hub_launch() {
    "$bin" serve --data-dir "$hub_dir" --https-port 0 --mqtt-port 0 --amqp-port 0 \
        --bind 127.0.0.1 --hostname localhost "$@" >>"$hub_dir.log" 2>&1 &
    hub_pid=$!
    local i
    for ((i = 0; i < 6000; i++)); do
        [[ -f $hub_dir/run.json && $(jq -r .pid "$hub_dir/run.json" 2>/dev/null) == "$hub_pid" ]] && return
        kill -0 "$hub_pid" 2>/dev/null || die "courier serve exited; see $hub_dir.log"
        sleep 0.005
    done
    die "courier serve did not start within 30 s; see $hub_dir.log"
}

hub_kill() { # SIGKILL: no shutdown of any kind
    kill -9 "$hub_pid"
    wait "$hub_pid" 2>/dev/null || true
    hub_pid=''
}

hub_stop() {
    [[ -n $hub_pid ]] || return 0
    kill "$hub_pid" 2>/dev/null || true
    wait "$hub_pid" 2>/dev/null || true
    hub_pid=''
    rm -rf "$hub_dir"
}

# Mosquitto's TLS listener uses the hub's development CA and certificate, so
# devices trust both the same way.
certs=''
ensure_certs() {
    [[ -f $certs/server.pem ]] && return
    hub_start certs
    certs=$out/tls
    mkdir -p "$certs"
    cp "$hub_dir"/tls/{ca.pem,server.pem,server-key.pem} "$certs/"
    hub_stop
    rm -rf "$out/certs"
}

# mosq_start NAME: a fresh Mosquitto with a TLS and a plain listener and
# persistent sessions kept as Mosquitto keeps them (BENCHMARKS.md says how).
mosq_start() {
    local dir=$out/$1/mosquitto
    rm -rf "$dir"
    mkdir -p "$dir"
    mosq_tls_port=$(free_port 18883)
    mosq_plain_port=$(free_port $((mosq_tls_port + 1)))
    {
        # As root, Mosquitto would switch to its own user, which cannot read these files.
        if [[ $(id -u) -eq 0 ]]; then echo "user root"; fi
        cat <<EOF
per_listener_settings false
allow_anonymous true
# Sessions and queued messages live in memory and are written to
# mosquitto.db every autosave_interval seconds and at a clean shutdown
# (1800 s is Mosquitto's default); nothing is fsynced per message.
persistence true
persistence_location $dir/
autosave_interval 1800
# Mosquitto's defaults, stated: unacknowledged QoS 1 messages per client, queued per client.
max_inflight_messages 20
max_queued_messages 1000
log_dest stderr
log_type error
log_type warning
listener $mosq_tls_port 127.0.0.1
cafile $certs/ca.pem
certfile $certs/server.pem
keyfile $certs/server-key.pem
listener $mosq_plain_port 127.0.0.1
EOF
    } >"$dir/mosquitto.conf"
    "$mosquitto" -c "$dir/mosquitto.conf" >"$dir/mosquitto.log" 2>&1 &
    mosq_pid=$!
    local i
    for ((i = 0; i < 1000; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$mosq_tls_port") 2>/dev/null && return
        kill -0 "$mosq_pid" 2>/dev/null || die "mosquitto exited; see $dir/mosquitto.log"
        sleep 0.01
    done
    die "mosquitto did not listen within 10 s"
}

mosq_stop() {
    [[ -n $mosq_pid ]] || return 0
    kill "$mosq_pid" 2>/dev/null || true
    wait "$mosq_pid" 2>/dev/null || true
    mosq_pid=''
}

# bench FILE ARGS…: `courier bench ARGS --json` into FILE, with the load
# average before and after added. A run that was not clean is kept and noted.
bench() {
    local file=$1 before rc=0
    shift
    before=$(load)
    echo "   courier bench $* ($(date +%T), load $before)"
    "$bin" bench "$@" --json >"$file.tmp" 2>"${file%.json}.stderr" || rc=$?
    if [[ ! -s $file.tmp ]]; then
        echo "   FAILED (exit $rc): $(tail -3 "${file%.json}.stderr")"
        rm -f "$file.tmp"
        return 0
    fi
    jq --arg before "$before" --arg after "$(load)" --argjson exit "$rc" \
        '. + {loadBefore: $before, loadAfter: $after, exitCode: $exit}' "$file.tmp" >"$file"
    rm -f "$file.tmp"
    if ((rc != 0)); then echo "   (exit $rc: not clean; see ${file%.json}.stderr)"; fi
}

c2d_hub() { bench "$1" c2d --data-dir "$hub_dir" "${@:2}"; }
c2d_mosquitto_tls() {
    bench "$1" c2d --broker "mqtts://localhost:$mosq_tls_port" --broker-ca "$certs/ca.pem" \
        --hub-pid "$mosq_pid" "${@:2}"
}

# --- (a) + (e): flat out, Courier and Mosquitto alternating ----------------
step_ae() {
    local run size=(--devices "$a_devices" --messages "$a_messages")
    log "(a)/(e) $a_devices devices × $a_messages messages, flat out, $runs run(s)"
    if want e; then ensure_certs; fi
    for ((run = 1; run <= runs; run++)); do
        hub_start "a-$run"
        c2d_hub "$out/a-courier-$run.json" "${size[@]}"
        hub_stop
        if want e; then
            mosq_start "e-$run"
            c2d_mosquitto_tls "$out/e-mosquitto-tls-$run.json" "${size[@]}"
            mosq_stop
        fi
    done
    # The hub with 4× the messages in flight (group commit shares each
    # fdatasync among more sends), and with the HTTPS send path.
    hub_start x-256
    c2d_hub "$out/x-courier-256.json" "${size[@]}" --senders 256
    hub_stop
    hub_start x-https
    c2d_hub "$out/x-courier-https.json" "${size[@]}" --send-over https
    hub_stop
    # Devices on the hub's other transports, through the Rust SDK.
    hub_start x-amqp-devices
    c2d_hub "$out/x-courier-amqp-devices.json" "${size[@]}" --transport amqp
    hub_stop
    hub_start x-https-devices
    c2d_hub "$out/x-courier-https-devices.json" "${size[@]}" --transport https
    hub_stop
    if want e; then
        # Mosquitto with as many in flight (64 × 4 = 256) and its best here
        # (16 per publisher); and without TLS.
        mosq_start e-extra
        c2d_mosquitto_tls "$out/e-mosquitto-tls-window4.json" "${size[@]}" --publish-window 4
        c2d_mosquitto_tls "$out/e-mosquitto-tls-window16.json" "${size[@]}" --publish-window 16
        bench "$out/e-mosquitto-plain.json" c2d --broker "mqtt://127.0.0.1:$mosq_plain_port" \
            --hub-pid "$mosq_pid" "${size[@]}"
        mosq_stop
    fi
}

# --- (b): latency at fixed rates ------------------------------------------
step_b() {
    local rate size=(--devices "$a_devices" --messages "$a_messages")
    log "(b) fixed rates ${rates[*]} msg/s, $a_devices devices × $a_messages messages"
    ensure_certs
    for rate in "${rates[@]}"; do
        hub_start "b-$rate"
        c2d_hub "$out/b-courier-$rate.json" "${size[@]}" --rate "$rate"
        hub_stop
        mosq_start "b-$rate"
        c2d_mosquitto_tls "$out/b-mosquitto-tls-$rate.json" "${size[@]}" --rate "$rate"
        mosq_stop
    done
}

# --- (c): idle TLS connections --------------------------------------------
step_c() {
    # The hub and the generator each need a descriptor per connection.
    local idle=$idle_target sources
    if ((nofile < idle + 500)); then
        idle=$(((nofile - 500) / 1000 * 1000))
    fi
    # One loopback source address per 10,000 connections (each has ~28,000 ports).
    sources=$(((idle + 9999) / 10000))
    log "(c) $idle idle MQTT/TLS connections from $sources source address(es)"
    if ((idle < idle_target)); then
        echo "   ulimit -n is $nofile (the hard limit): $idle connections instead of $idle_target"
    fi
    hub_start c --max-connections $((idle + 100))
    bench "$out/c-idle.json" idle --data-dir "$hub_dir" --connections "$idle" --source-addresses "$sources"
    hub_stop
}

# --- (d): recovery after kill -9 --------------------------------------------
# restart_timed CACHE: starts the hub on $hub_dir again and records how long
# it took until run.json named it and until an HTTPS request was answered.
restart_timed() {
    local cache=$1 t0 t_run t_serve info
    t0=$(now_ms)
    hub_launch
    t_run=$(now_ms)
    until info=$("$bin" hub info --data-dir "$hub_dir" --json 2>/dev/null); do
        kill -0 "$hub_pid" 2>/dev/null || die "the restarted hub exited; see $hub_dir.log"
        sleep 0.005
    done
    t_serve=$(now_ms)
    jq -n --arg cache "$cache" --argjson info "$info" --argjson runJsonMs $((t_run - t0)) \
        --argjson servingMs $((t_serve - t0)) --argjson walBytes "$(du -sb "$hub_dir/wal" | cut -f1)" \
        --arg hubSays "$(grep -o 'recovered in [0-9]* ms' "$hub_dir.log" | tail -1)" --arg load "$(load)" \
        '{cache: $cache, runJsonMs: $runJsonMs, servingMs: $servingMs,
          queuedMessages: $info.queuedMessages, devices: $info.deviceCount, walBytes: $walBytes,
          hubSays: $hubSays, loadAfter: $load}' >"$out/d-restart-$cache.json"
    echo "   restart, page cache $cache: run.json after $((t_run - t0)) ms, serving after $((t_serve - t0)) ms"
}

step_d() {
    log "(d) $fill_devices devices × $fill_messages messages queued, kill -9, restart"
    hub_start d
    bench "$out/d-fill.json" fill --data-dir "$hub_dir" --devices "$fill_devices" --messages "$fill_messages"
    hub_kill
    restart_timed warm
    if ((drop_caches)); then
        hub_kill
        sync
        if (echo 3 >/proc/sys/vm/drop_caches) 2>/dev/null; then
            restart_timed cold
        else
            echo "   (cannot drop the page cache here: no cold restart)"
            hub_launch
        fi
    fi
    hub_stop
}

# --- summary ----------------------------------------------------------------
# jq helpers: the median of an array, and microseconds as milliseconds.
jq_defs='def med: sort | if length == 0 then null else .[(length - 1) / 2 | floor] end;
def ms: if . == null then "-" else . / 100 | round / 10 end;
def int: if . == null then "-" else floor end;'

# c2d_row NAME FILE…: one table row of medians over the files that exist.
c2d_row() {
    local name=$1 files=() f
    shift
    for f in "$@"; do if [[ -f $f ]]; then files+=("$f"); fi; done
    ((${#files[@]} > 0)) || return 0
    jq -rs --arg name "$name" "$jq_defs"'
        "| \($name) | \(length) | \([.[].throughput.deliveredPerSecond] | med | int)
        | \([.[].latency.p50Micros] | med | ms) | \([.[].latency.p99Micros] | med | ms)
        | \([.[].hub.cpuMicrosPerMessage // empty] | med | int)
        | \([.[].hub.peakRssBytes // empty] | med | if . == null then "-" else . / 1048576 | floor end)
        | \([.[].generator.cpuMicrosPerMessage] | med | int) | \([.[].loadBefore] | join("; ")) |"
        | gsub("\n *"; " ")' "${files[@]}"
}

summary() {
    local f
    jq -r '"Machine: \(.cores) cores, \(.memory), \(.cpu), kernel \(.kernel); \(.courier) (\(.commit)); \(.mosquitto); load at start \(.loadAtStart); ulimit -n \(.openFilesLimit)\(if .quick then "; QUICK run" else "" end)\n"' "$out/machine.json"
    if compgen -G "$out/[ae]-*.json" >/dev/null; then
        jq -rs '"(a)/(e) \(.[0].devices) devices × \(.[0].messagesPerDevice) messages, flat out (medians)\n"' "$out"/[ae]-*.json
        echo "| system | runs | msg/s | p50 ms | p99 ms | CPU µs/msg | peak RSS MiB | generator µs/msg | load before |"
        echo "|---|---|---|---|---|---|---|---|---|"
        c2d_row "Courier: 64 AMQP senders (4 connections), MQTT/TLS devices" "$out"/a-courier-*.json
        c2d_row "Mosquitto TLS: 64 publishers, window 1" "$out"/e-mosquitto-tls-[0-9]*.json
        c2d_row "Courier: 256 AMQP senders" "$out/x-courier-256.json"
        c2d_row "Mosquitto TLS: window 4 (256 in flight)" "$out/e-mosquitto-tls-window4.json"
        c2d_row "Courier: 64 HTTPS senders" "$out/x-courier-https.json"
        c2d_row "Courier: AMQP devices (Rust SDK)" "$out/x-courier-amqp-devices.json"
        c2d_row "Courier: HTTPS devices (Rust SDK, long polls)" "$out/x-courier-https-devices.json"
        c2d_row "Mosquitto TLS: window 16" "$out/e-mosquitto-tls-window16.json"
        c2d_row "Mosquitto plain TCP: window 1" "$out/e-mosquitto-plain.json"
        if compgen -G "$out/a-courier-*.json" >/dev/null && compgen -G "$out/e-mosquitto-tls-[0-9]*.json" >/dev/null; then
            # Ratios of the runs made back to back (hub run N, then Mosquitto run N):
            # the load from outside drifts slower than one pair takes.
            jq -rn "$jq_defs"'
                [inputs | {file: input_filename, rate: .throughput.deliveredPerSecond, cpu: .hub.cpuMicrosPerMessage}]
                | map(.run = (.file | capture("-(?<n>[0-9]+)[.]json$").n)
                      | .hub = (.file | test("/a-courier-")))
                | group_by(.run)
                | map(select(length == 2)
                      | (map(select(.hub))[0]) as $c | (map(select(.hub | not))[0]) as $m
                      | {rate: ($c.rate / $m.rate), cpu: ($c.cpu / $m.cpu)})
                | def r2: . * 100 | round / 100;
                  "\nCourier/Mosquitto (TLS, window 1), median of \(length) back-to-back pairs: \(map(.rate) | med | r2)× the throughput (pairs: \(map(.rate | r2) | join(", "))), \(map(.cpu) | med | r2)× the CPU per message (target: ≥1.5× the throughput at ≤20 µs)"' \
                "$out"/a-courier-*.json "$out"/e-mosquitto-tls-[0-9]*.json
        fi
        echo
    fi
    if compgen -G "$out/b-*.json" >/dev/null; then
        jq -rs '"(b) fixed send rate, \(.[0].devices) devices × \(.[0].messagesPerDevice) messages\n"' "$out"/b-*.json
        echo "| system | target msg/s | sent msg/s | sustained | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | CPU µs/msg |"
        echo "|---|---|---|---|---|---|---|---|---|---|"
        local files
        mapfile -t files < <(printf '%s\n' "$out"/b-*.json | sort -V)
        for f in "${files[@]}"; do
            jq -r "$jq_defs"'"| \(if .broker then "Mosquitto TLS" else "Courier" end) | \(.rate)
                | \(.throughput.sentPerSecond | floor) | \(if .throughput.sentPerSecond >= 0.95 * .rate then "yes" else "NO" end)
                | \(.latency.p50Micros | ms) | \(.latency.p90Micros | ms) | \(.latency.p99Micros | ms)
                | \(.latency.p999Micros | ms) | \(.latency.maxMicros | ms) | \(.hub.cpuMicrosPerMessage | int) |"
                | gsub("\n *"; " ")' "$f"
        done
        echo
    fi
    if [[ -f $out/c-idle.json ]]; then
        jq -r '"(c) \(.connections) idle MQTT/TLS connections from \(.sourceAddresses) source address(es): hub RSS \(.rssBeforeBytes / 1048576 | floor) → \(.rssAfterBytes / 1048576 | floor) MiB = \(.rssPerConnectionBytes / 1024 * 10 | round / 10) KiB per connection (target ≤20 KiB); connected and subscribed in \(.connectSeconds * 10 | round / 10) s; generator RSS \(.generatorRssBytes / 1048576 | floor) MiB\n"' "$out/c-idle.json"
    fi
    if [[ -f $out/d-fill.json ]]; then
        jq -r '"(d) \(.sent) messages queued over \(.devices) devices: devices created in \(.createSeconds * 10 | round / 10) s, messages sent in \(.sendSeconds * 10 | round / 10) s (\(.sentPerSecond | floor) msg/s)"' "$out/d-fill.json"
        for f in "$out"/d-restart-*.json; do
            if [[ -f $f ]]; then
                jq -r '"    kill -9, restart, page cache \(.cache): run.json after \(.runJsonMs) ms, serving (HTTPS answered) after \(.servingMs) ms; \(.queuedMessages) messages queued; hub: \(.hubSays); log \(.walBytes / 1048576 | floor) MiB (target ≤5 s)"' "$f"
            fi
        done
        echo
    fi
}

if [[ -n $summary_only ]]; then
    out=$(cd "$summary_only" && pwd)
else
    out=${out:-bench-results/$(date +%Y%m%d-%H%M%S)}
    mkdir -p "$out"
    out=$(cd "$out" && pwd)
    prepare
    if want a || want e; then step_ae; fi
    if want b; then step_b; fi
    if want c; then step_c; fi
    if want d; then step_d; fi
fi
log "summary"
summary | tee "$out/summary.md"
echo "(every run's JSON: $out)"
