// Compatibility test: the official Azure IoT Node device SDK (azure-iot-device +
// azure-iot-device-http, versions pinned in package.json) receiving and settling
// C2D messages from a running Courier hub over HTTPS, unchanged.
//
// It does not start the hub: scripts/compat-node.sh does, on port 443, because the
// SDK's HTTP transport always connects to port 443 of the connection string's
// HostName. The service side (device create, send, feedback) goes through the
// `courier` CLI (courier-cli.mjs) so this file exercises only the device SDK.
//
// Environment: COURIER_BIN (path to the courier binary), COURIER_DATA_DIR (the
// running hub's data dir, holding run.json and the CA).

import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';

import device from 'azure-iot-device';
import deviceHttp from 'azure-iot-device-http';

import {
  EVENT_TIMEOUT_MS, TEST_TIMEOUT_MS, loadHub, createDevice, sendC2d, expectFeedback,
  eventQueue, observedTransport,
} from './courier-cli.mjs';

const { Client, Message } = device;
const { Http } = deviceHttp;

let caPem;

before(() => {
  const hub = loadHub();
  // The SDK has no port setting for HTTP: anything but 443 cannot work.
  assert.equal(hub.run.httpsPort, 443, `the hub must serve HTTPS on 443 for the Node SDK; run.json says ${hub.run.httpsPort}`);
  caPem = hub.caPem;
});

// ---------------------------------------------------------------------------
// Device side, through the official SDK.

/**
 * Opens an SDK client over HTTPS. `next()` resolves with the next C2D message and
 * `nextError()` with the next receive error; each fails at once if the other kind
 * of event comes first, and after EVENT_TIMEOUT_MS if none does.
 */
async function openDevice(connectionString) {
  const { Transport, seen } = observedTransport(Http);
  const client = Client.fromConnectionString(connectionString, Transport);
  const events = eventQueue();
  seen.transport.on('error', (err) => events.push({ kind: 'error', value: err }));
  client.on('error', (err) => events.push({ kind: 'error', value: err }));

  await client.open();
  // One setOptions call: the transport keeps only the last options object, so
  // `ca` and the receive policy must travel together. drain=false and one poll
  // a second keep a single receive in flight, so arrival order is queue order.
  await client.setOptions({ ca: caPem, http: { receivePolicy: { interval: 1, drain: false } } });
  // Adding the first 'message' listener starts the SDK's polling.
  client.on('message', (msg) => events.push({ kind: 'message', value: msg }));

  return {
    client,
    async next() {
      const { kind, value } = await events.next('a C2D message or receive error');
      if (kind !== 'message') assert.fail(`expected a C2D message, the SDK reported ${describeError(value)}`);
      return value;
    },
    async nextError() {
      const { kind, value } = await events.next('a receive error or C2D message');
      if (kind !== 'error') assert.fail(`expected a receive error, the SDK received message ${value.messageId}`);
      return value;
    },
    /** Receive errors reported but never awaited (descriptions). */
    pendingErrors: () => events.pending().filter((e) => e.kind === 'error').map((e) => describeError(e.value)),
    close: () => client.close(),
  };
}

function describeError(err) {
  const status = err?.response?.statusCode;
  return `${err?.name ?? 'Error'}: ${err?.message}${status ? ` [HTTP ${status}] ${err.responseBody ?? ''}` : ''}`;
}

function bodyOf(msg) {
  return msg.getBytes().toString('utf8');
}

/** The message's application properties as the SDK exposes them (key → value). */
function propsOf(msg) {
  return Object.fromEntries(msg.properties.propertyList.map(({ key, value }) => [key, value]));
}

/** Awaits an SDK call that must fail with the given HTTP status; returns the error. */
async function expectHttpFailure(promise, status, what) {
  const err = await promise.then(
    () => assert.fail(`${what} succeeded; expected HTTP ${status}`),
    (e) => e,
  );
  assert.equal(err?.response?.statusCode, status, `${what}: ${describeError(err)}`);
  return err;
}

// ---------------------------------------------------------------------------
// Scenarios.

test('(a) receive three messages in order with properties, complete them, feedback Success',
  { timeout: TEST_TIMEOUT_MS }, async () => {
    const { deviceId, connectionString } = createDevice('a');
    const sent = [0, 1, 2].map((i) => ({
      body: `compat message ${i} for ${deviceId}`,
      messageId: `a-${i}-${randomUUID()}`,
      props: { color: ['red', 'green', 'blue'][i], seq: String(i) },
    }));
    for (const m of sent) sendC2d(deviceId, m);

    const dev = await openDevice(connectionString);
    try {
      for (const m of sent) {
        const msg = await dev.next();
        assert.equal(msg.messageId, m.messageId, 'messages arrive in send order');
        assert.equal(bodyOf(msg), m.body);
        // Node's HTTP transport keeps the header name, prefix included.
        assert.deepEqual(propsOf(msg), {
          'iothub-app-color': m.props.color,
          'iothub-app-seq': m.props.seq,
        });
        assert.equal(msg.to, `/devices/${deviceId}/messages/devicebound`);
        assert.ok(msg.lockToken, 'the SDK took a lock token from the ETag');
        await dev.client.complete(msg);
      }
    } finally {
      await dev.close();
    }
    assert.deepEqual(dev.pendingErrors(), [], 'receive errors');

    expectFeedback(deviceId, Object.fromEntries(sent.map((m) => [m.messageId, 'Success'])));
  });

test('(b) reject: feedback Rejected and the message is not redelivered',
  { timeout: TEST_TIMEOUT_MS }, async () => {
    const { deviceId, connectionString } = createDevice('b');
    const rejected = { body: 'reject me', messageId: `b-reject-${randomUUID()}` };
    const marker = { body: 'sent after the reject', messageId: `b-marker-${randomUUID()}` };
    sendC2d(deviceId, rejected);

    const dev = await openDevice(connectionString);
    try {
      const first = await dev.next();
      assert.equal(first.messageId, rejected.messageId);
      assert.equal(bodyOf(first), rejected.body);
      await dev.client.reject(first);

      // A message sent after the reject is queued behind anything still in the
      // queue: if the rejected message came back, it would show up before this.
      sendC2d(deviceId, marker);
      const after = await dev.next();
      assert.equal(after.messageId, marker.messageId, 'the rejected message was redelivered');
      await dev.client.complete(after);

      // Settling the rejected message again must fail: its lock is gone.
      await expectHttpFailure(dev.client.complete(first), 412, 'complete after reject');
    } finally {
      await dev.close();
    }
    assert.deepEqual(dev.pendingErrors(), [], 'receive errors');

    expectFeedback(deviceId, { [rejected.messageId]: 'Rejected', [marker.messageId]: 'Success' });
  });

test('(c) abandon once, receive it again, complete: feedback Success',
  { timeout: TEST_TIMEOUT_MS }, async () => {
    const { deviceId, connectionString } = createDevice('c');
    const m = { body: 'abandon me once', messageId: `c-${randomUUID()}`, props: { attempt: 'any' } };
    sendC2d(deviceId, m);

    const dev = await openDevice(connectionString);
    try {
      const firstDelivery = await dev.next();
      assert.equal(firstDelivery.messageId, m.messageId);
      await dev.client.abandon(firstDelivery);

      // The SDK's HTTP Message does not carry iothub-deliverycount (azure-iot-http-base
      // toMessage copies only messageId, to, expiry, correlationId, app properties and
      // the lock token), so the redelivery is recognised by id, body and properties.
      const secondDelivery = await dev.next();
      assert.equal(secondDelivery.messageId, m.messageId);
      assert.equal(bodyOf(secondDelivery), m.body);
      assert.deepEqual(propsOf(secondDelivery), { 'iothub-app-attempt': 'any' });
      assert.notEqual(secondDelivery.lockToken, firstDelivery.lockToken, 'each delivery has its own lock');

      // The first delivery's lock ended with the abandon.
      await expectHttpFailure(dev.client.complete(firstDelivery), 412, 'complete with the abandoned lock');
      await dev.client.complete(secondDelivery);
    } finally {
      await dev.close();
    }
    assert.deepEqual(dev.pendingErrors(), [], 'receive errors');

    expectFeedback(deviceId, { [m.messageId]: 'Success' });
  });

test('(d) a device with a wrong key is refused: 401 IotHubUnauthorizedAccess',
  { timeout: TEST_TIMEOUT_MS }, async () => {
    const { deviceId, connectionString } = createDevice('d');
    // A waiting message makes the point: with a bad key the receive must still fail.
    sendC2d(deviceId, { body: 'not for impostors', messageId: `d-${randomUUID()}` });
    const wrongKey = randomBytes(32).toString('base64');
    const impostor = connectionString.replace(/SharedAccessKey=[^;]+/, `SharedAccessKey=${wrongKey}`);
    assert.notEqual(impostor, connectionString);

    // Over HTTP, open() makes no request (the transport's connect is a no-op), so
    // the refusal shows on the first receive. azure-iot-device-http 1.14.4 reports
    // receive and settle failures as a plain Error carrying the response; it maps
    // 401 to UnauthorizedError only on sendEvent.
    const dev = await openDevice(impostor);
    try {
      const err = await dev.nextError();
      assert.equal(err?.response?.statusCode, 401, describeError(err));
      assert.equal(err.response.headers['iothub-errorcode'], 'IotHubUnauthorizedAccess');
      // The SDKs parse `Message` as `ErrorCode:{Name};{text}` (azure-iot-http-base parseErrorBody).
      const body = JSON.parse(err.responseBody);
      assert.match(body.Message, /^ErrorCode:IotHubUnauthorizedAccess;./);
      assert.equal(body.errorCode, 401002);

      // A settle call is refused for the key before the lock is looked at (401, not 412).
      const fake = new Message('');
      fake.lockToken = randomUUID();
      await expectHttpFailure(dev.client.complete(fake), 401, 'complete with a wrong key');
    } finally {
      await dev.close();
    }
  });
