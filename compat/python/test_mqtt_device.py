"""Compatibility test: the official Azure IoT Python device SDK (azure-iot-device,
pinned in requirements.txt) receiving C2D messages from a running Courier hub over
MQTT (port 8883) and MQTT over WebSockets (port 443), unchanged.

It does not start the hub: scripts/compat-python.sh does, on 443 and 8883, because
the SDK hard-codes both ports. The service side (device create, send, feedback,
queue depth) goes through the `courier` CLI so this file exercises only the
device SDK.

Environment: COURIER_BIN (path to the courier binary), COURIER_DATA_DIR (the
running hub's data dir, holding run.json and the CA).
"""

from __future__ import annotations

import base64
import contextlib
import json
import queue
import re
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Iterator

import pytest
from azure.iot.device import IoTHubDeviceClient
from azure.iot.device.exceptions import CredentialError

from courier_support import (
    EVENT_TIMEOUT_S,
    Hub,
    bounded,
    courier,
    create_device,
    expect_feedback,
    json_documents,
    load_hub,
    queued_count,
    wait_queue_empty,
)

#: Both MQTT transports of the SDK: TLS on 8883, and WebSockets on 443.
TRANSPORTS = [
    pytest.param(False, id="mqtt-8883"),
    pytest.param(True, id="mqtt-ws-443"),
]

#: What .NET's `DateTime.ParseExact(v, "o")` accepts for `$.exp` (iothub-wire.md §2.4).
DOTNET_ROUND_TRIP_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$")


@pytest.fixture(scope="module")
def hub() -> Hub:
    # The SDK hard-codes MQTT on 8883 and MQTT over WebSockets on 443.
    return load_hub(mqttPort=8883, httpsPort=443)


# ---------------------------------------------------------------------------
# Service side, through the courier CLI.


@dataclass(frozen=True)
class C2d:
    """One C2D message as the test sends it, and as the device must see it."""

    body: bytes
    message_id: str
    correlation_id: str
    properties: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    content_encoding: str = "utf-8"
    ack: str = "full"


def send_c2d(hub: Hub, device_id: str, m: C2d) -> None:
    args = [
        "c2d", "send", device_id, m.body.decode("utf-8"), "--json",
        "--message-id", m.message_id,
        "--correlation-id", m.correlation_id,
        "--content-type", m.content_type,
        "--content-encoding", m.content_encoding,
        "--ack", m.ack,
    ]  # fmt: skip
    for key, value in m.properties.items():
        args += ["--prop", f"{key}={value}"]
    sent = json_documents(courier(hub, *args))
    assert sent and sent[0].get("messageId") == m.message_id, f"c2d send reported {sent}"


# ---------------------------------------------------------------------------
# Device side, through the official SDK.


@contextlib.contextmanager
def device_client(hub: Hub, connection_string: str, websockets: bool) -> Iterator[IoTHubDeviceClient]:
    """An SDK client for the hub's CA, shut down (which disconnects it) on exit."""
    client = IoTHubDeviceClient.create_from_connection_string(
        connection_string, server_verification_cert=hub.ca_pem, websockets=websockets
    )
    try:
        yield client
    finally:
        bounded("client.shutdown()", client.shutdown)


def awkward_message(device_id: str, i: int) -> C2d:
    """Message `i` of the receive scenario, with ids and properties that need encoding."""
    nonce = uuid.uuid4().hex
    body = json.dumps({"seq": i, "device": device_id, "text": "café & crème 100% /ok?"}, ensure_ascii=False)
    return C2d(
        body=body.encode("utf-8"),
        # IoT Hub message ids allow these punctuation characters; each needs encoding in a topic.
        message_id=f"py-{i}-{nonce}:+%_#*?!(),=@;$'",
        correlation_id=f"corr {i}/é&x=y+z%41",
        properties={
            "seq": str(i),
            # Values: space, '/', '&', '=', '+', '%', '?', '#', and non-ASCII.
            "text": f"a b/c&d=e+f%20g?h#i é {i}",
            "unicode": "crème brûlée ✓",
            # Keys: HTTP header name characters, which the CLI's send path carries
            # (lower-case, as HTTP header names arrive lower-cased at the hub).
            "amp&key": "x=y",
            "pct%key": "100%",
            "plus+key": "1+1=2",
            "x!#$%&'*+-.^_`|~": "every punctuation a key may hold",
        },
    )


@pytest.mark.parametrize("websockets", TRANSPORTS)
def test_receive_three_messages_with_properties_in_order(hub: Hub, websockets: bool) -> None:
    """Receive in send order with body and every property intact; PUBACK completes; Success feedback."""
    device_id, connection_string = create_device(hub, "recv-ws" if websockets else "recv")
    sent = [awkward_message(device_id, i) for i in range(3)]
    # The first message waits in the queue before the device connects: it must flow
    # once the device subscribes. The others arrive while it is connected.
    send_c2d(hub, device_id, sent[0])

    inbox: queue.Queue = queue.Queue()
    with device_client(hub, connection_string, websockets) as client:
        bounded("client.connect()", client.connect)
        # Setting the handler subscribes to the C2D topic, and returns after the SUBACK.
        bounded("setting client.on_message_received", lambda: setattr(client, "on_message_received", inbox.put))
        for m in sent[1:]:
            send_c2d(hub, device_id, m)

        received = []
        for i, m in enumerate(sent):
            try:
                got = inbox.get(timeout=EVENT_TIMEOUT_S)
            except queue.Empty:
                pytest.fail(
                    f"message {i} ({m.message_id}) not received within {EVENT_TIMEOUT_S} s; "
                    f"received before it: {received}"
                )
            received.append(got.message_id)
            assert got.message_id == m.message_id, f"message {i}: messages arrive in send order"
            assert got.data == m.body, f"message {i}: body bytes"
            assert got.correlation_id == m.correlation_id, f"message {i}: correlation id ($.cid)"
            assert got.content_type == m.content_type, f"message {i}: content type ($.ct)"
            assert got.content_encoding == m.content_encoding, f"message {i}: content encoding ($.ce)"
            assert got.custom_properties == m.properties, (
                f"message {i}: application properties (and no other keys: system properties "
                "the SDK does not know would show up here)"
            )
            assert got.ack == m.ack, f"message {i}: iothub-ack"
            assert got.user_id is None, f"message {i}: no user id was sent, got {got.user_id!r}"
            if got.expiry_time_utc is not None:
                assert DOTNET_ROUND_TRIP_UTC.match(got.expiry_time_utc), (
                    f"message {i}: $.exp must be yyyy-MM-ddTHH:mm:ss.fffffffZ, got {got.expiry_time_utc!r}"
                )

        # The SDK PUBACKs after the handler returns; a PUBACK completes the message.
        wait_queue_empty(hub, device_id, "the SDK's PUBACKs should have completed every message")
        assert inbox.empty(), f"a message was delivered twice: {inbox.get_nowait().message_id}"

    expect_feedback(hub, device_id, {m.message_id: "Success" for m in sent})


@pytest.mark.parametrize("websockets", TRANSPORTS)
def test_wrong_key_is_refused_with_credential_error(hub: Hub, websockets: bool) -> None:
    """A device signing with a wrong key gets a CONNACK refusal, which the SDK raises as CredentialError."""
    device_id, connection_string = create_device(hub, "badkey-ws" if websockets else "badkey")
    # A waiting message makes the point: with a bad key it must stay queued.
    send_c2d(hub, device_id, C2d(body=b"{}", message_id=f"badkey-{uuid.uuid4()}", correlation_id="not for impostors"))
    wrong_key = base64.b64encode(secrets.token_bytes(32)).decode("ascii")
    impostor = re.sub(r"SharedAccessKey=[^;]+", f"SharedAccessKey={wrong_key}", connection_string)
    assert impostor != connection_string

    with device_client(hub, impostor, websockets) as client:
        # The SDK maps CONNACK 4 (bad user name or password) and 5 (not authorized) to
        # CredentialError; a connection closed without a CONNACK would surface as
        # ConnectionFailedError or ConnectionDroppedError instead.
        with pytest.raises(CredentialError):
            bounded("client.connect() with a wrong key", client.connect)
        assert not client.connected, "the client reports a connection after a refused CONNECT"

    assert queued_count(hub, device_id) == 1, "the queued message must stay queued for the real device"
