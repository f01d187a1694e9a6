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
import uuid
from typing import Any, Iterator

import certifi
import pytest
from azure.iot.hub import IoTHubRegistryManager
from uamqp import TransportType

from courier_support import (
    Hub,
    bounded,
    courier,
    create_device,
    expect_feedback,
    json_documents,
    load_hub,
    queued_count,
)

#: Both AMQP transports of the SDK: TLS on 5671, and WebSockets on 443.
TRANSPORTS = [
    pytest.param(TransportType.Amqp, id="amqp-5671"),
    pytest.param(TransportType.AmqpOverWebsocket, id="amqp-ws-443"),
]


@pytest.fixture(scope="module")
def hub() -> Hub:
    # uAMQP hard-codes AMQP on 5671 and AMQP over WebSockets on 443.
    return load_hub(amqpPort=5671, httpsPort=443)


# ---------------------------------------------------------------------------
# Device side and feedback, through the courier CLI.


def receive(hub: Hub, device_id: str, count: int, settle: str = "--complete") -> list[dict[str, Any]]:
    """Receives `count` messages as the device (over HTTPS) and settles each with `settle`."""
    out = courier(hub, "c2d", "receive", device_id, "--json", settle, "--count", str(count), "--wait", "10s")
    got = json_documents(out)
    assert len(got) == count, f"expected {count} message(s) for {device_id}, the CLI printed {got}"
    return got


# ---------------------------------------------------------------------------
# Service side, through the official SDK.


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
    device_id, _ = create_device(hub, f"amqp-send-{transport_type.name.lower()}")
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
    device_id, _ = create_device(hub, f"amqp-noid-{transport_type.name.lower()}")
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
    device_id, _ = create_device(hub, f"amqp-unknown-{transport_type.name.lower()}")
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
