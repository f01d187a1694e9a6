"""Compatibility test: the official Azure IoT Python service SDK (azure-iot-hub,
pinned in requirements.txt) against a running Courier hub over HTTPS, unchanged:
the registry (create with generated keys, get, update with an etag, list,
statistics, delete), purge of a device's C2D queue, and feedback over HTTP.

The SDK's REST client (msrest over requests) has no CA option:
scripts/compat-python.sh points REQUESTS_CA_BUNDLE at the hub's CA. Port 443,
as the SDK hard-codes it. Messages are sent and received through the `courier`
CLI; test_amqp_service.py covers the SDK's own C2D send, over AMQP.

Environment: COURIER_BIN, COURIER_DATA_DIR (set by scripts/compat-python.sh).
"""

from __future__ import annotations

import base64
import os
import time
import uuid

import pytest
from azure.iot.hub import IoTHubHttpRuntimeManager, IoTHubRegistryManager
from msrest.exceptions import HttpOperationError

from courier_support import Hub, courier, load_hub

#: How long the hub may take to close a feedback batch (Courier: ~0.5 s).
FEEDBACK_WAIT_S = 10
#: Between two feedback polls that found nothing.
POLL_INTERVAL_S = 0.1


@pytest.fixture(scope="module")
def hub() -> Hub:
    assert os.environ.get("REQUESTS_CA_BUNDLE"), "REQUESTS_CA_BUNDLE must name the hub's CA"
    # msrest hard-codes HTTPS on 443.
    return load_hub(httpsPort=443)


def test_registry_create_get_update_list_statistics_delete(hub: Hub) -> None:
    registry = IoTHubRegistryManager.from_connection_string(hub.owner_connection_string)
    device_id = f"compat-py-registry-{uuid.uuid4().hex[:8]}"

    # No keys given: the hub generates them (the trace's `"symmetricKey": {}`).
    created = registry.create_device_with_sas(device_id, None, None, "enabled")
    assert created.device_id == device_id
    assert created.status == "enabled"
    assert created.generation_id and created.etag
    key = created.authentication.symmetric_key.primary_key
    assert len(base64.b64decode(key)) == 32, f"a generated 256-bit key, got {key!r}"

    got = registry.get_device(device_id)
    assert (got.generation_id, got.etag) == (created.generation_id, created.etag)
    assert got.cloud_to_device_message_count == 0
    assert got.connection_state == "Disconnected"

    updated = registry.update_device_with_sas(
        device_id, created.etag, key, created.authentication.symmetric_key.secondary_key, "disabled"
    )
    assert updated.status == "disabled"
    assert updated.generation_id == created.generation_id
    assert updated.etag != created.etag

    # A stale etag is refused with 412, and nothing changes.
    with pytest.raises(HttpOperationError) as stale:
        registry.update_device_with_sas(device_id, created.etag, key, key, "enabled")
    assert stale.value.response.status_code == 412
    assert registry.get_device(device_id).status == "disabled"

    listed = registry.get_devices(max_number_of_devices=1000)
    assert any(d.device_id == device_id and d.status == "disabled" for d in listed)

    stats = registry.get_device_registry_statistics()
    assert stats.total_device_count >= 1 and stats.disabled_device_count >= 1
    assert registry.get_service_statistics().connected_device_count >= 0

    registry.delete_device(device_id)
    with pytest.raises(HttpOperationError) as gone:
        registry.get_device(device_id)
    assert gone.value.response.status_code == 404
    assert gone.value.response.headers.get("iothub-errorcode") == "DeviceNotFound"


def test_purge_and_feedback_over_https(hub: Hub) -> None:
    registry = IoTHubRegistryManager.from_connection_string(hub.owner_connection_string)
    runtime = IoTHubHttpRuntimeManager.from_connection_string(hub.owner_connection_string)
    device_id = f"compat-py-purge-{uuid.uuid4().hex[:8]}"
    registry.create_device_with_sas(device_id, None, None, "enabled")
    try:
        # Purge: 3 queued messages asking for negative feedback are removed.
        for i in range(3):
            courier(hub, "c2d", "send", device_id, f"purge me {i}", "--message-id", f"{device_id}-p{i}", "--ack", "negative")
        # The 2021-04-12 SDK does not wrap purge; its generated client does.
        purged = registry.protocol.cloud_to_device_messages.purge_cloud_to_device_message_queue(device_id)
        assert purged.total_messages_purged == 3
        assert purged.device_id == device_id
        assert registry.get_device(device_id).cloud_to_device_message_count == 0

        # Feedback over HTTP: a completed ack=positive message and the purged ones.
        courier(hub, "c2d", "send", device_id, "done", "--message-id", f"{device_id}-ok", "--ack", "positive")
        courier(hub, "c2d", "receive", device_id, "--complete", "--wait", "5s")
        statuses: dict[str, str] = {}
        expected = {f"{device_id}-p{i}": "Purged" for i in range(3)} | {f"{device_id}-ok": "Success"}
        deadline = time.monotonic() + FEEDBACK_WAIT_S
        while not all(k in statuses for k in expected):
            assert time.monotonic() < deadline, f"feedback so far: {statuses}"
            # receive_feedback_notification returns None unless raw: the lock
            # token is only in the response's ETag header.
            raw = runtime.protocol.cloud_to_device_messages.receive_feedback_notification(raw=True)
            response = raw.response
            if response.status_code == 204:
                # The SDK cannot long-poll; look again shortly.
                time.sleep(POLL_INTERVAL_S)
                continue
            assert response.status_code == 200
            assert response.headers["Content-Type"].startswith("application/vnd.microsoft.iothub.feedback.json")
            for record in response.json():
                if record["deviceId"] == device_id:
                    statuses[record["originalMessageId"]] = record["statusCode"]
                    assert record["description"] == record["statusCode"]
            runtime.complete_feedback_notification(response.headers["ETag"].strip('"'))
        assert statuses == expected
    finally:
        registry.delete_device(device_id)
