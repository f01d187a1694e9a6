"""Compatibility test: the official Azure IoT Python service SDK (azure-iot-hub,
pinned in requirements.txt, with its uAMQP) sending C2D messages to a running
Courier hub over AMQP (port 5671) and AMQP over WebSockets (port 443, path
`/$servicebus/websocket/`), unchanged: `IoTHubRegistryManager.send_c2d_message`
with system and application properties and a feedback request, and a send to an
unknown device.

It does not start the hub: scripts/compat-python.sh does, on 5671 and 443,
because uAMQP hard-codes both ports. The device side (receive, settle) and the
feedback are read through the `courier` CLI, so this file exercises only the
service SDK.

Trusting the hub's CA: azure-iot-hub passes no `verify` to uAMQP, and uAMQP
then loads its trust anchors from `certifi.where()`, once, while the client is
built (uamqp/authentication/common.py, `set_tlsio` / `set_wsio`); it ignores
REQUESTS_CA_BUNDLE. So `registry_manager` points `certifi.where` at the hub's
CA just while it builds the client, in this process only: the SDK is unchanged
and the venv's certifi bundle is left alone.

Environment: COURIER_BIN, COURIER_DATA_DIR (set by scripts/compat-python.sh).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import certifi
import pytest
from azure.iot.hub import IoTHubRegistryManager
from uamqp import TransportType

#: Generous bound for one awaited event (a send, a CLI call).
EVENT_TIMEOUT_S = 30
#: Feedback may be batched by the hub (IoT Hub batches for up to 15 s), so allow more.
FEEDBACK_TIMEOUT_S = 60

#: Both AMQP transports of the SDK: TLS on 5671, and WebSockets on 443.
TRANSPORTS = [
    pytest.param(TransportType.Amqp, id="amqp-5671"),
    pytest.param(TransportType.AmqpOverWebsocket, id="amqp-ws-443"),
]


@dataclass(frozen=True)
class Hub:
    """The running hub, as scripts/compat-python.sh started it."""

    bin: str
    data_dir: str
    ca_path: str
    owner_connection_string: str


@pytest.fixture(scope="module")
def hub() -> Hub:
    courier_bin = os.environ.get("COURIER_BIN")
    data_dir = os.environ.get("COURIER_DATA_DIR")
    assert courier_bin, "COURIER_BIN must name the courier binary (scripts/compat-python.sh sets it)"
    assert data_dir, "COURIER_DATA_DIR must name the running hub's data dir (scripts/compat-python.sh sets it)"
    run = json.loads(Path(data_dir, "run.json").read_text(encoding="utf-8"))
    # uAMQP has no port setting: anything else cannot work.
    assert run.get("amqpPort") == 5671, f"the hub must serve AMQP on 5671 for uAMQP; run.json says {run}"
    assert run.get("httpsPort") == 443, f"the hub must serve AMQP over WebSockets on 443 for uAMQP; run.json says {run}"
    hub_json = json.loads(Path(data_dir, "hub.json").read_text(encoding="utf-8"))
    owner = next((p for p in hub_json["policies"] if p["keyName"] == "iothubowner"), None)
    assert owner, "hub.json has no iothubowner policy"
    return Hub(
        bin=courier_bin,
        data_dir=data_dir,
        ca_path=run.get("caPath") or str(Path(data_dir, "tls", "ca.pem")),
        owner_connection_string=(
            f"HostName={hub_json['hostName']};SharedAccessKeyName=iothubowner;"
            f"SharedAccessKey={owner['primaryKey']}"
        ),
    )


# ---------------------------------------------------------------------------
# Device side and feedback, through the courier CLI.


def courier(hub: Hub, *args: str) -> str:
    """Runs the courier CLI against the hub and returns its standard output."""
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


def create_device(hub: Hub, scenario: str) -> str:
    """Creates a fresh device and returns its id."""
    device_id = f"compat-py-{scenario}-{uuid.uuid4().hex[:8]}"
    created = json_documents(courier(hub, "device", "create", device_id, "--json"))
    assert device_id in json.dumps(created), f"device create did not report {device_id}: {created}"
    return device_id


def queued_count(hub: Hub, device_id: str) -> int:
    shown = json_documents(courier(hub, "device", "show", device_id, "--json"))
    assert shown, "device show printed no JSON"
    return shown[0]["cloudToDeviceMessageCount"]


def receive(hub: Hub, device_id: str, count: int, settle: str = "--complete") -> list[dict[str, Any]]:
    """Receives `count` messages as the device (over HTTPS) and settles each with `settle`."""
    out = courier(hub, "c2d", "receive", device_id, "--json", settle, "--count", str(count), "--wait", "10s")
    got = json_documents(out)
    assert len(got) == count, f"expected {count} message(s) for {device_id}, the CLI printed {got}"
    return got


def expect_feedback(hub: Hub, device_id: str, expected: dict[str, str]) -> None:
    """Reads feedback until every message id in `expected` (id -> statusCode) has a record
    for `device_id`, then checks each has exactly one record with that status."""
    deadline = time.monotonic() + FEEDBACK_TIMEOUT_S
    seen: dict[str, list[str]] = {}
    while missing := [mid for mid in expected if mid not in seen]:
        assert time.monotonic() < deadline, f"no feedback for {missing} within {FEEDBACK_TIMEOUT_S} s; got {seen}"
        # One batch per call; the CLI completes what it prints, and prints nothing
        # if no batch came in time.
        out = courier(hub, "feedback", "--json", "--count", "1", "--wait", "10s")
        for record in _feedback_records(out):
            if record.get("deviceId") == device_id:
                seen.setdefault(record["originalMessageId"], []).append(record["statusCode"])
    assert seen == {mid: [status] for mid, status in expected.items()}, "feedback records for this device"


def _feedback_records(stdout: str) -> list[dict[str, Any]]:
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


# ---------------------------------------------------------------------------
# Service side, through the official SDK.


def bounded(what: str, call: Callable[[], Any]) -> Any:
    """Runs a blocking SDK call, failing the test if it takes over EVENT_TIMEOUT_S.

    uAMQP's own timeouts are longer than a test should wait, and a hung call must
    not hang the run; the daemon thread is abandoned then.
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


@contextlib.contextmanager
def registry_manager(hub: Hub, transport_type: TransportType) -> Iterator[IoTHubRegistryManager]:
    """A service client whose uAMQP trusts the hub's CA (see the module note); its
    AMQP connection is closed on exit."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(certifi, "where", lambda: hub.ca_path)
        manager = IoTHubRegistryManager.from_connection_string(
            hub.owner_connection_string, transport_type=transport_type
        )
    try:
        yield manager
    finally:
        # What the manager's __del__ does; done here so the connection closes now.
        bounded("closing the AMQP client", manager.amqp_svc_client.disconnect_sync)


@pytest.mark.parametrize("transport_type", TRANSPORTS)
def test_send_with_properties_and_feedback(hub: Hub, transport_type: TransportType) -> None:
    """send_c2d_message maps messageId/correlationId/contentType/contentEncoding to AMQP
    properties and the rest to application properties; the hub keeps them all, honours
    `iothub-ack`, and reports Success and Rejected feedback."""
    device_id = create_device(hub, f"amqp-send-{transport_type.name.lower()}")
    nonce = uuid.uuid4().hex
    sent = [
        {
            "body": json.dumps({"seq": i, "text": "café & crème 100% /ok?"}, ensure_ascii=False),
            "message_id": f"py-amqp-{i}-{nonce}:+%_#*?!(),=@;$'",
            "correlation_id": f"corr {i}/é&x=y+z%41",
            # Application property names arrive lower-cased through the CLI (HTTP
            # header names), so these are lower-case already.
            "props": {"seq": str(i), "text": f"a b/c&d=e+f%20g?h#i é {i}", "unicode": "crème brûlée ✓"},
        }
        for i in range(2)
    ]
    with registry_manager(hub, transport_type) as manager:
        for m in sent:
            properties = {
                "messageId": m["message_id"],
                "correlationId": m["correlation_id"],
                "contentType": "application/json",
                "contentEncoding": "utf-8",
                # The Python SDK has no ack field: IoT Hub reads this application property.
                "iothub-ack": "full",
                **m["props"],
            }
            bounded(
                f"send_c2d_message({m['message_id']})",
                lambda body=m["body"], properties=properties: manager.send_c2d_message(device_id, body, properties),
            )

    assert queued_count(hub, device_id) == 2, "both sends are queued"
    # The first is completed, the second rejected.
    [first] = receive(hub, device_id, 1, "--complete")
    [second] = receive(hub, device_id, 1, "--reject")
    for i, (m, got) in enumerate(zip(sent, [first, second])):
        assert got["messageId"] == m["message_id"], f"message {i}: messages arrive in send order, with the id set"
        assert got.get("body") == m["body"], f"message {i}: body"
        assert got.get("correlationId") == m["correlation_id"], f"message {i}: correlation id"
        assert got.get("contentType") == "application/json", f"message {i}: content type"
        assert got.get("contentEncoding") == "utf-8", f"message {i}: content encoding"
        assert got.get("ack") == "full", f"message {i}: iothub-ack became the message's ack"
        assert got.get("to") == f"/devices/{device_id}/messages/devicebound", f"message {i}: to"
        assert got.get("properties") == m["props"], (
            f"message {i}: application properties (and no other keys: the system properties and "
            "iothub-ack must not show up here)"
        )
    assert queued_count(hub, device_id) == 0, "complete and reject leave nothing queued"

    expect_feedback(hub, device_id, {sent[0]["message_id"]: "Success", sent[1]["message_id"]: "Rejected"})


@pytest.mark.parametrize("transport_type", TRANSPORTS)
def test_send_without_message_id_gets_the_sdks_uuid(hub: Hub, transport_type: TransportType) -> None:
    """Without messageId the SDK sets a uuid4 string; without iothub-ack no feedback is asked for."""
    device_id = create_device(hub, f"amqp-noid-{transport_type.name.lower()}")
    with registry_manager(hub, transport_type) as manager:
        bounded("send_c2d_message without properties", lambda: manager.send_c2d_message(device_id, "plain"))
    [got] = receive(hub, device_id, 1, "--complete")
    assert str(uuid.UUID(got["messageId"])) == got["messageId"], f"a uuid message id, got {got['messageId']!r}"
    assert got.get("body") == "plain"
    assert got.get("ack") in (None, "none"), f"no feedback was asked for, got ack {got.get('ack')!r}"
    assert got.get("properties") == {}, "no application properties were sent"


@pytest.mark.parametrize("transport_type", TRANSPORTS)
def test_send_to_unknown_device_fails_and_the_client_still_sends(hub: Hub, transport_type: TransportType) -> None:
    """A send to a device the hub does not know is refused (the SDK raises its generic
    send failure), and the same client's next send still goes through."""
    device_id = create_device(hub, f"amqp-unknown-{transport_type.name.lower()}")
    missing = f"compat-py-missing-{uuid.uuid4()}"
    with registry_manager(hub, transport_type) as manager:
        # azure-iot-hub 2.7.0 raises a bare Exception("C2D message send failure")
        # for any outcome but Accepted (iothub_amqp_client.py).
        with pytest.raises(Exception, match="C2D message send failure"):
            bounded(f"send_c2d_message to {missing}", lambda: manager.send_c2d_message(missing, "nobody home"))
        message_id = f"after-refusal-{uuid.uuid4()}"
        bounded(
            "send_c2d_message after the refusal",
            lambda: manager.send_c2d_message(device_id, "after the refusal", {"messageId": message_id}),
        )
    [got] = receive(hub, device_id, 1, "--complete")
    assert got["messageId"] == message_id, "the send after the refusal is delivered"
