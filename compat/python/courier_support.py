"""Shared helpers of the Python compatibility tests: the running hub, as
scripts/compat-python.sh started it, and the `courier` CLI for everything the
SDK under test does not do itself (creating devices, sending, reading feedback
and queue depths).

Environment: COURIER_BIN (the courier binary), COURIER_DATA_DIR (the running
hub's data dir, holding run.json, hub.json and the CA).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

#: Generous bound for one awaited event (a message, a connect, a CLI call).
EVENT_TIMEOUT_S = 30
#: Feedback may be batched by the hub (IoT Hub batches for up to 15 s), so allow more.
FEEDBACK_TIMEOUT_S = 60
#: Between two looks at a device's queue depth while waiting for it to drain.
POLL_INTERVAL_S = 0.2


@dataclass(frozen=True)
class Hub:
    """The running hub, as scripts/compat-python.sh started it."""

    bin: str
    data_dir: str
    ca_path: str
    ca_pem: str
    owner_connection_string: str


def load_hub(**required_ports: int) -> Hub:
    """Reads the running hub's run.json and hub.json; `required_ports` (run.json
    keys such as `mqttPort=8883`) are the ports the SDK under test hard-codes."""
    courier_bin = os.environ.get("COURIER_BIN")
    data_dir = os.environ.get("COURIER_DATA_DIR")
    assert courier_bin, "COURIER_BIN must name the courier binary (scripts/compat-python.sh sets it)"
    assert data_dir, "COURIER_DATA_DIR must name the running hub's data dir (scripts/compat-python.sh sets it)"
    run = json.loads(Path(data_dir, "run.json").read_text(encoding="utf-8"))
    for key, port in required_ports.items():
        # The SDKs have no port settings: anything else cannot work.
        assert run.get(key) == port, f"the hub must serve {key} {port} for the SDK; run.json says {run}"
    hub_json = json.loads(Path(data_dir, "hub.json").read_text(encoding="utf-8"))
    owner = next((p for p in hub_json["policies"] if p["keyName"] == "iothubowner"), None)
    assert owner, "hub.json has no iothubowner policy"
    ca_path = run.get("caPath") or str(Path(data_dir, "tls", "ca.pem"))
    return Hub(
        bin=courier_bin,
        data_dir=data_dir,
        ca_path=ca_path,
        ca_pem=Path(ca_path).read_text(encoding="utf-8"),
        owner_connection_string=(
            f"HostName={hub_json['hostName']};SharedAccessKeyName=iothubowner;"
            f"SharedAccessKey={owner['primaryKey']}"
        ),
    )


def courier(hub: Hub, *args: str) -> str:
    """Runs the courier CLI against the hub and returns its standard output.

    The hub-selection flag goes after the command words, where the CLI accepts it.
    """
    argv = [hub.bin, *args, "--data-dir", hub.data_dir]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=EVENT_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(argv)} did not finish within {EVENT_TIMEOUT_S} s")
    stdout = done.stdout.decode("utf-8")
    if done.returncode != 0:
        stderr = done.stderr.decode("utf-8", "replace").strip()
        pytest.fail(f"{' '.join(argv)} failed (exit {done.returncode}): {stderr or stdout}")
    return stdout


def json_documents(stdout: str) -> list[Any]:
    """The JSON documents the CLI printed with --json (one per line)."""
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def create_device(hub: Hub, scenario: str) -> tuple[str, str]:
    """Creates a fresh device and returns its id and connection string."""
    device_id = f"compat-py-{scenario}-{uuid.uuid4().hex[:8]}"
    created = json_documents(courier(hub, "device", "create", device_id, "--json"))
    assert device_id in json.dumps(created), f"device create did not report {device_id}: {created}"
    out = courier(hub, "device", "connection-string", device_id)
    found = re.search(r"HostName=[^;\s]+;DeviceId=[^;\s]+;SharedAccessKey=[^;\s]+", out)
    assert found, f"device connection-string printed no device connection string: {out!r}"
    return device_id, found.group(0)


def queued_count(hub: Hub, device_id: str) -> int:
    shown = json_documents(courier(hub, "device", "show", device_id, "--json"))
    assert shown, "device show printed no JSON"
    return shown[0]["cloudToDeviceMessageCount"]


def wait_queue_empty(hub: Hub, device_id: str, why: str) -> None:
    """Polls the device's queue depth until it is 0; fails after EVENT_TIMEOUT_S."""
    deadline = time.monotonic() + EVENT_TIMEOUT_S
    while (count := queued_count(hub, device_id)) != 0:
        assert time.monotonic() < deadline, (
            f"{device_id} still has {count} queued message(s) after {EVENT_TIMEOUT_S} s: {why}"
        )
        time.sleep(POLL_INTERVAL_S)


def feedback_records(stdout: str) -> list[dict[str, Any]]:
    """Every feedback record in whatever JSON shape the CLI prints (batches, arrays, lines)."""
    records: list[dict[str, Any]] = []

    def walk(v: Any) -> None:
        if isinstance(v, list):
            for item in v:
                walk(item)
        elif isinstance(v, dict):
            if "originalMessageId" in v and "statusCode" in v:
                records.append(v)
            else:
                for item in v.values():
                    walk(item)

    for document in json_documents(stdout):
        walk(document)
    return records


def expect_feedback(hub: Hub, device_id: str, expected: dict[str, str]) -> None:
    """Reads feedback until every message id in `expected` (id -> statusCode) has a record
    for `device_id`, then checks each has exactly one record with that status."""
    deadline = time.monotonic() + FEEDBACK_TIMEOUT_S
    seen: dict[str, list[str]] = {}
    while missing := [mid for mid in expected if mid not in seen]:
        assert time.monotonic() < deadline, (
            f"no feedback for {missing} within {FEEDBACK_TIMEOUT_S} s; got {seen}"
        )
        # One batch per call (the hub may put several records in one batch); the CLI
        # completes what it prints, and prints nothing if no batch came in time.
        out = courier(hub, "feedback", "--json", "--count", "1", "--wait", "10s")
        for record in feedback_records(out):
            if record.get("deviceId") == device_id:
                seen.setdefault(record["originalMessageId"], []).append(record["statusCode"])
    assert seen == {mid: [status] for mid, status in expected.items()}, "feedback records for this device"


def bounded(what: str, call: Callable[[], Any]) -> Any:
    """Runs a blocking SDK call, failing the test if it takes over EVENT_TIMEOUT_S.

    The SDK's own operation timeouts are longer than a test should wait, and a
    hung call must not hang the run; the daemon thread is abandoned then.
    """
    done = threading.Event()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as e:  # noqa: BLE001 - re-raised in the test's thread
            outcome["error"] = e
        finally:
            done.set()

    threading.Thread(target=run, name=what, daemon=True).start()
    if not done.wait(EVENT_TIMEOUT_S):
        pytest.fail(f"{what} did not return within {EVENT_TIMEOUT_S} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")
