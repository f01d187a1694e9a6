#!/usr/bin/env bash
# The test command for Courier: what CI runs (.ci/run) and what a contributor runs.
#
# Installs what a fresh Debian machine is missing (only what is missing), then runs,
# stopping at the first failure:
#   fmt, clippy, core boundary guard, nextest, doc tests, Node SDK compatibility,
#   Python SDK compatibility.
# Every cargo step uses the default dev profile, so the workspace compiles once.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

if [[ ${CI:-} == true ]]; then
    export CARGO_TERM_COLOR=never
fi
if [[ -d $HOME/.cargo/bin && :$PATH: != *":$HOME/.cargo/bin:"* ]]; then
    export PATH=$HOME/.cargo/bin:$PATH
fi

# Runs a command as root: directly, or through sudo when we are not root.
as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        echo "need root to run: $* (and sudo is not installed)" >&2
        return 1
    fi
}

# True when `python3 -m venv` can make a venv with pip (what scripts/compat-python.sh needs).
python3_venv_works() {
    local probe rc=0
    probe=$(mktemp -d "${TMPDIR:-/tmp}/courier-venv-probe.XXXXXX") || return 1
    python3 -m venv "$probe/venv" >/dev/null 2>&1 || rc=$?
    rm -rf "$probe"
    return "$rc"
}

# The functions run as steps return non-zero explicitly on failure: run_step
# calls them as `fn || rc=$?`, where `set -e` does not apply.
install_prerequisites() {
    local missing=()
    command -v cc >/dev/null && command -v make >/dev/null || missing+=(build-essential)
    command -v pkg-config >/dev/null || missing+=(pkg-config)
    command -v node >/dev/null || missing+=(nodejs)
    command -v npm >/dev/null || missing+=(npm)
    command -v python3 >/dev/null || missing+=(python3)
    # Self-signed device certificates for the Node SDK's X.509 scenarios.
    command -v openssl >/dev/null || missing+=(openssl)
    # The broker `courier bench c2d --broker` is smoke-tested against (Debian puts it in /usr/sbin).
    command -v mosquitto >/dev/null || [[ -x /usr/sbin/mosquitto ]] || missing+=(mosquitto)
    # Debian's python3 cannot make a venv with pip until python3-venv is installed.
    if ! command -v python3 >/dev/null || ! python3_venv_works; then
        missing+=(python3-venv)
    fi
    if ((${#missing[@]} > 0)); then
        echo "apt: installing ${missing[*]}"
        as_root apt-get update || return 1
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" || return 1
    else
        echo "apt: build-essential, pkg-config, nodejs, npm, python3 (with venv), openssl, mosquitto present"
    fi

    if ! command -v cargo >/dev/null; then
        echo "cargo is not installed: install Rust with rustup (https://rustup.rs), then rerun" >&2
        return 1
    fi
    local component
    for component in rustfmt clippy; do
        local probe=fmt
        [[ $component == clippy ]] && probe=clippy
        if cargo "$probe" --version >/dev/null 2>&1; then
            echo "rustup: $component present"
        else
            echo "rustup: adding $component"
            rustup component add "$component" || return 1
        fi
    done

    if cargo nextest --version >/dev/null 2>&1; then
        echo "cargo-nextest present"
    else
        echo "cargo install --locked cargo-nextest"
        cargo install --locked cargo-nextest || return 1
    fi

    echo "tools: $(cargo --version); $(node --version 2>/dev/null) node; npm $(npm --version 2>/dev/null); $(python3 --version 2>&1)"
}

# courier-core decides message fates and must stay free of I/O: no async
# runtime, sockets or TLS in its normal dependency tree.
core_boundary_guard() {
    local tree
    # One line per crate: drop cargo tree's "(*)" repeats.
    tree=$(cargo tree -p courier-core -e normal --prefix none --no-dedupe) || return 1
    tree=$(sort -u <<<"$tree")
    local offenders line
    offenders=$(grep -E '^(tokio|mio|hyper|axum|socket2|rustls)([-_][a-z0-9_-]*)? v' <<<"$tree" || true)
    if [[ -n $offenders ]]; then
        echo "courier-core must not depend on I/O crates; cargo tree -p courier-core -e normal has:" >&2
        while IFS= read -r line; do printf '  %s\n' "$line"; done <<<"$offenders" >&2
        echo "(find the path with: cargo tree -p courier-core -e normal -i <crate>)" >&2
        return 1
    fi
    echo "courier-core: $(($(wc -l <<<"$tree") - 1)) normal dependencies, none of tokio|mio|hyper|axum|socket2|rustls"
}

total_start=$SECONDS
step_no=0
steps_total=8

# Runs one named step with a banner and its elapsed time; exits on failure.
run_step() {
    local name=$1
    shift
    step_no=$((step_no + 1))
    printf '\n==> [%d/%d] %s: %s\n' "$step_no" "$steps_total" "$name" "$*"
    local start=$SECONDS rc=0
    "$@" || rc=$?
    local elapsed=$((SECONDS - start))
    if ((rc != 0)); then
        printf '\n!!! FAILED at step [%d/%d] %s (exit %d, %ds; total %ds)\n' \
            "$step_no" "$steps_total" "$name" "$rc" "$elapsed" "$((SECONDS - total_start))" >&2
        exit "$rc"
    fi
    printf '<== [%d/%d] %s ok (%ds)\n' "$step_no" "$steps_total" "$name" "$elapsed"
}

run_step setup install_prerequisites
run_step fmt cargo fmt --all -- --check
run_step clippy cargo clippy --workspace --all-targets -- -D warnings
run_step boundary core_boundary_guard
run_step nextest cargo nextest run --workspace --no-fail-fast
run_step doctest cargo test --workspace --doc
# The nextest step built target/debug/courier (the `it` tests run it) and
# passed: the compat scripts test that binary, instead of building it again
# with `cargo build -p courier`'s narrower feature set (a minute of CI).
if [[ -z ${COURIER_BIN:-} && -x target/debug/courier ]]; then
    export COURIER_BIN=$PWD/target/debug/courier
fi
run_step compat-node scripts/compat-node.sh
run_step compat-python scripts/compat-python.sh

printf '\nAll %d steps passed in %ds.\n' "$steps_total" "$((SECONDS - total_start))"
