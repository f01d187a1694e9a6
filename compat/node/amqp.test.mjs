// Compatibility test: the official Azure IoT Node SDKs over AMQP, unchanged —
// the service SDK (azure-iothub: send with ack, feedback receiver) and the
// device SDK (azure-iot-device + azure-iot-device-amqp: receive, complete,
// reject, abandon), versions pinned in package.json — against a running Courier
// hub over AMQP (port 5671) and AMQP over WebSockets (port 443,
// `/$iothub/websocket`).
//
// It does not start the hub: scripts/compat-node.sh does, on 5671 and 443,
// because both SDKs hard-code those ports. The service SDK's AMQP transport has
// no CA option, so the script points NODE_EXTRA_CA_CERTS at the hub's CA; the
// device SDK gets it through `setOptions({ ca })`. Device creation and queue
// depth go through the `courier` CLI (courier-cli.mjs); every message and every
// feedback record goes through the SDKs.
//
// Each scenario pairs a service client and a device client on the same
// transport family (both Amqp, or both AmqpWs) and uses its own device.

import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';

import iothub from 'azure-iothub';
import device from 'azure-iot-device';
import deviceAmqp from 'azure-iot-device-amqp';
import common from 'azure-iot-common';

import {
  EVENT_TIMEOUT_MS, FEEDBACK_TIMEOUT_MS, TEST_TIMEOUT_MS, loadHub, ownerConnectionString,
  createDevice, sendC2d, queuedCount, waitQueueEmpty, withTimeout, eventQueue,
} from './courier-cli.mjs';

const { Client: ServiceClient, Amqp: ServiceAmqp, AmqpWs: ServiceAmqpWs } = iothub;
const { Client: DeviceClient } = device;
const { Amqp: DeviceAmqp, AmqpWs: DeviceAmqpWs } = deviceAmqp;
// The service SDK's own samples build C2D messages with azure-iot-common's Message.
const { Message } = common;

/** Both AMQP transports of each SDK: TLS on 5671, and WebSockets on 443. */
const TRANSPORTS = [
  { name: 'Amqp (5671)', tag: 'amqp', Service: ServiceAmqp, Device: DeviceAmqp },
  { name: 'AmqpWs (443)', tag: 'amqpws', Service: ServiceAmqpWs, Device: DeviceAmqpWs },
];

/** What every feedback message must carry (iothub-wire.md §3.8). */
const FEEDBACK_CONTENT_TYPE = 'application/vnd.microsoft.iothub.feedback.json';

let caPem;
let ownerCs;

before(() => {
  const hub = loadHub();
  // The SDKs have no port settings: anything else cannot work.
  assert.equal(hub.run.amqpPort, 5671, `the hub must serve AMQP on 5671 for the Node SDKs; run.json says ${JSON.stringify(hub.run)}`);
  assert.equal(hub.run.httpsPort, 443, `the hub must serve AMQP over WebSockets on 443 for the Node SDKs; run.json says ${JSON.stringify(hub.run)}`);
  assert.ok(process.env.NODE_EXTRA_CA_CERTS, 'NODE_EXTRA_CA_CERTS must name the hub\'s CA (scripts/compat-node.sh sets it): the service SDK has no CA option');
  caPem = hub.caPem;
  ownerCs = ownerConnectionString();
});

function describe(err) {
  return `${err?.constructor?.name ?? 'Error'}: ${err?.message}${err?.amqpError ? ` [${err.amqpError.condition}: ${err.amqpError.description}]` : ''}`;
}

// ---------------------------------------------------------------------------
// Service side, through azure-iothub.

/**
 * Opens a service client over `Transport` with its feedback receiver attached.
 * `expectFeedback` waits for this device's records; the receiver accepts every
 * batch (the SDK's receiver auto-accepts), so the test files must not read
 * feedback at the same time (scripts/compat-node.sh runs them one at a time).
 */
async function openService(Transport) {
  const client = ServiceClient.fromConnectionString(ownerCs, Transport);
  const errors = [];
  client.on('error', (err) => errors.push(describe(err)));
  await withTimeout(client.open(), 'service client.open()');
  const { result: receiver } = await withTimeout(client.getFeedbackReceiver(), 'service client.getFeedbackReceiver()');

  // deviceId → originalMessageId → [statusCode, ...]
  const records = new Map();
  const arrivals = eventQueue(FEEDBACK_TIMEOUT_MS);
  receiver.on('error', (err) => errors.push(`feedback receiver: ${describe(err)}`));
  receiver.on('message', (msg) => {
    try {
      assert.equal(msg.contentType, FEEDBACK_CONTENT_TYPE, 'feedback message content type');
      const batch = JSON.parse(msg.getBytes().toString('utf8'));
      assert.ok(Array.isArray(batch) && batch.length > 0, `a feedback body is a non-empty JSON array, got ${JSON.stringify(batch)}`);
      for (const r of batch) {
        assert.equal(r.description, r.statusCode, `feedback description must equal the status name: ${JSON.stringify(r)}`);
        assert.ok(r.deviceGenerationId, `feedback record without deviceGenerationId: ${JSON.stringify(r)}`);
        assert.ok(!Number.isNaN(Date.parse(r.enqueuedTimeUtc)), `feedback enqueuedTimeUtc is not a time: ${JSON.stringify(r)}`);
        if (!records.has(r.deviceId)) records.set(r.deviceId, new Map());
        const byId = records.get(r.deviceId);
        if (!byId.has(r.originalMessageId)) byId.set(r.originalMessageId, []);
        byId.get(r.originalMessageId).push(r.statusCode);
      }
      arrivals.push({ ok: true });
    } catch (err) {
      arrivals.push({ ok: false, err });
    }
  });

  return {
    client,
    /** Sends through the SDK; resolves with the SDK's result. */
    async send(deviceId, { body, messageId, correlationId, contentType, contentEncoding, expiryTimeUtc, props = {}, ack = 'full' }) {
      const message = new Message(body);
      message.messageId = messageId;
      message.ack = ack;
      if (expiryTimeUtc !== undefined) message.expiryTimeUtc = expiryTimeUtc;
      if (correlationId !== undefined) message.correlationId = correlationId;
      if (contentType !== undefined) message.contentType = contentType;
      if (contentEncoding !== undefined) message.contentEncoding = contentEncoding;
      for (const [k, v] of Object.entries(props)) message.properties.add(k, v);
      const { result } = await withTimeout(client.send(deviceId, message), `service send of ${messageId}`);
      return result;
    },
    /** Waits until every id in `expected` (id → statusCode) has a record, then checks each has exactly that one. */
    async expectFeedback(deviceId, expected) {
      const seen = () => records.get(deviceId) ?? new Map();
      const missing = () => Object.keys(expected).filter((id) => !seen().has(id));
      while (missing().length > 0) {
        const arrival = await arrivals.next(`feedback for ${missing().join(', ')} (have ${JSON.stringify([...seen()])})`);
        if (!arrival.ok) throw arrival.err;
      }
      const want = Object.fromEntries(Object.entries(expected).map(([id, code]) => [id, [code]]));
      assert.deepEqual(Object.fromEntries(seen()), want, `feedback records for ${deviceId}`);
    },
    errors: () => errors.slice(),
    close: () => withTimeout(client.close(), 'service client.close()'),
  };
}

// ---------------------------------------------------------------------------
// Device side, through azure-iot-device + azure-iot-device-amqp.

/**
 * Opens a device client over `Transport` and attaches its C2D link. `next()`
 * resolves with the next C2D message; it fails at once if the client reported
 * an error first, and after EVENT_TIMEOUT_MS if nothing came.
 */
async function openDevice(connectionString, Transport) {
  const client = DeviceClient.fromConnectionString(connectionString, Transport);
  const events = eventQueue();
  client.on('error', (err) => events.push({ kind: 'error', value: err }));
  await client.setOptions({ ca: caPem });
  await withTimeout(client.open(), 'device client.open()');
  // Adding the first 'message' listener makes the SDK attach the C2D receiver link.
  client.on('message', (msg) => events.push({ kind: 'message', value: msg }));
  return {
    client,
    async next(what = 'a C2D message') {
      const { kind, value } = await events.next(`${what} (or a device client error)`);
      if (kind !== 'message') assert.fail(`expected a C2D message, the device SDK reported ${describe(value)}`);
      return value;
    },
    /** Events that came but were never awaited (descriptions). */
    pending: () => events.pending().map(({ kind, value }) => (kind === 'message' ? `message ${value.messageId}` : describe(value))),
    close: () => withTimeout(client.close(), 'device client.close()'),
  };
}

/** The message's application properties as the SDK exposes them (key → value). */
function propsOf(msg) {
  return Object.fromEntries(msg.properties.propertyList.map(({ key, value }) => [key, value]));
}

/**
 * IoT Hub's delivery count annotation (iothub-wire.md §3.5): the number of
 * earlier deliveries (docs/http-api.md; .NET's Message.DeliveryCount), so 0 on
 * a first delivery. The SDK leaves it on the AMQP message.
 */
function deliveryCountOf(msg) {
  return msg.transportObj?.message_annotations?.['iothub-deliverycount'];
}

/** Message `i` of the receive scenario; ids and values AMQP carries as they are. */
function richMessage(deviceId, i) {
  return {
    body: JSON.stringify({ seq: i, device: deviceId, text: 'café & crème 100% /ok?' }),
    // Message 1's id is UUID-shaped: the service SDK sends that one as an AMQP
    // uuid (0x98), the others as strings; the device must see the same text.
    messageId: i === 1 ? randomUUID() : `node-amqp-${i}-${randomUUID()}:+%_#*?!(),=@;$'`,
    correlationId: `corr ${i}/é&x=y+z%41`,
    contentType: 'application/json',
    contentEncoding: 'utf-8',
    props: {
      seq: String(i),
      text: `a b/c&d=e+f%20g?h#i é ${i}`,
      unicode: 'crème brûlée ✓',
      'Mixed-Case Key': 'kept as sent',
    },
  };
}

/** Awaits `promise`, which must fail; returns the error. */
async function expectFailure(promise, what) {
  return withTimeout(promise, what).then(
    () => assert.fail(`${what} succeeded; it must fail`),
    (e) => e,
  );
}

// ---------------------------------------------------------------------------
// Scenarios.

for (const { name, tag, Service, Device } of TRANSPORTS) {
  test(`${name}: service sends three messages with ack=full; the device receives them in order with every property and completes them; feedback Success`,
    { timeout: TEST_TIMEOUT_MS }, async () => {
      const { deviceId, connectionString } = createDevice(`recv-${tag}`);
      const sent = [0, 1, 2].map((i) => richMessage(deviceId, i));
      const service = await openService(Service);
      try {
        // The first message waits in the queue before the device connects; the
        // others arrive while its link is attached.
        const enqueued = await service.send(deviceId, sent[0]);
        assert.equal(enqueued?.constructor?.name, 'MessageEnqueued', `send resolved with ${enqueued?.constructor?.name}`);
        const dev = await openDevice(connectionString, Device);
        try {
          for (const m of sent.slice(1)) await service.send(deviceId, m);
          for (const [i, m] of sent.entries()) {
            const msg = await dev.next(`message ${i} (${m.messageId})`);
            assert.equal(msg.messageId, m.messageId, `message ${i}: messages arrive in send order`);
            assert.deepEqual(msg.getBytes(), Buffer.from(m.body, 'utf8'), `message ${i}: body bytes`);
            assert.equal(msg.correlationId, m.correlationId, `message ${i}: correlation-id`);
            assert.equal(msg.contentType, m.contentType, `message ${i}: content-type`);
            assert.equal(msg.contentEncoding, m.contentEncoding, `message ${i}: content-encoding`);
            assert.equal(msg.to, `/devices/${deviceId}/messages/devicebound`, `message ${i}: to`);
            // The device SDK maps the iothub-ack application property to msg.ack.
            assert.equal(msg.ack, 'full', `message ${i}: iothub-ack`);
            assert.deepEqual(propsOf(msg), m.props,
              `message ${i}: application properties (and no other keys: anything the hub added would show up here)`);
            assert.equal(deliveryCountOf(msg), 0, `message ${i}: iothub-deliverycount of a first delivery`);
            await withTimeout(dev.client.complete(msg), `complete(message ${i})`);
          }
          await waitQueueEmpty(deviceId, 'the completes should have removed every message');
          assert.deepEqual(dev.pending(), [], 'nothing else was delivered or reported to the device');
        } finally {
          await dev.close();
        }
        await service.expectFeedback(deviceId, Object.fromEntries(sent.map((m) => [m.messageId, 'Success'])));
        assert.deepEqual(service.errors(), [], 'service client errors');
      } finally {
        await service.close();
      }
    });

  test(`${name}: the device rejects a message: it is not redelivered and the feedback is Rejected`,
    { timeout: TEST_TIMEOUT_MS }, async () => {
      const { deviceId, connectionString } = createDevice(`reject-${tag}`);
      const rejected = { body: 'reject me', messageId: `reject-${randomUUID()}`, props: { scenario: 'reject' } };
      const marker = { body: 'sent after the reject', messageId: `marker-${randomUUID()}` };
      const service = await openService(Service);
      try {
        await service.send(deviceId, rejected);
        const dev = await openDevice(connectionString, Device);
        try {
          const first = await dev.next();
          assert.equal(first.messageId, rejected.messageId);
          assert.equal(first.getBytes().toString('utf8'), rejected.body);
          await withTimeout(dev.client.reject(first), 'reject()');

          // A message sent after the reject is queued behind anything still in the
          // queue: if the rejected message came back, it would show up before this.
          await service.send(deviceId, marker);
          const after = await dev.next();
          assert.equal(after.messageId, marker.messageId, 'the rejected message was redelivered');
          await withTimeout(dev.client.complete(after), 'complete(marker)');
          await waitQueueEmpty(deviceId, 'reject and complete should leave nothing queued');
          assert.deepEqual(dev.pending(), [], 'nothing else was delivered or reported to the device');
        } finally {
          await dev.close();
        }
        await service.expectFeedback(deviceId, { [rejected.messageId]: 'Rejected', [marker.messageId]: 'Success' });
        assert.deepEqual(service.errors(), [], 'service client errors');
      } finally {
        await service.close();
      }
    });

  test(`${name}: the device abandons a message once: it is redelivered with a higher delivery count, then completed; feedback Success`,
    { timeout: TEST_TIMEOUT_MS }, async () => {
      const { deviceId, connectionString } = createDevice(`abandon-${tag}`);
      const m = { body: 'abandon me once', messageId: `abandon-${randomUUID()}`, correlationId: 'c-1', props: { attempt: 'any' } };
      const service = await openService(Service);
      try {
        await service.send(deviceId, m);
        const dev = await openDevice(connectionString, Device);
        try {
          const firstDelivery = await dev.next();
          assert.equal(firstDelivery.messageId, m.messageId);
          await withTimeout(dev.client.abandon(firstDelivery), 'abandon()');

          const secondDelivery = await dev.next();
          assert.equal(secondDelivery.messageId, m.messageId, 'the abandoned message comes back');
          assert.equal(secondDelivery.getBytes().toString('utf8'), m.body);
          assert.equal(secondDelivery.correlationId, m.correlationId);
          assert.deepEqual(propsOf(secondDelivery), m.props);
          assert.equal(deliveryCountOf(secondDelivery), deliveryCountOf(firstDelivery) + 1,
            `iothub-deliverycount: first ${deliveryCountOf(firstDelivery)}, then ${deliveryCountOf(secondDelivery)}`);
          await withTimeout(dev.client.complete(secondDelivery), 'complete(redelivery)');
          await waitQueueEmpty(deviceId, 'the complete should have removed the message');
          assert.deepEqual(dev.pending(), [], 'nothing else was delivered or reported to the device');
        } finally {
          await dev.close();
        }
        await service.expectFeedback(deviceId, { [m.messageId]: 'Success' });
        assert.deepEqual(service.errors(), [], 'service client errors');
      } finally {
        await service.close();
      }
    });

  test(`${name}: a device whose max delivery count is 2 abandons twice: no third delivery, feedback DeliveryCountExceeded`,
    { timeout: TEST_TIMEOUT_MS }, async () => {
      const { deviceId, connectionString } = createDevice(`maxdc-${tag}`, ['--max-delivery-count', '2']);
      const m = { body: 'abandon me until I am dead-lettered', messageId: `maxdc-${randomUUID()}` };
      const marker = { body: 'sent after the dead-lettering', messageId: `maxdc-marker-${randomUUID()}` };
      const service = await openService(Service);
      try {
        await service.send(deviceId, m);
        const dev = await openDevice(connectionString, Device);
        try {
          for (const attempt of [1, 2]) {
            const msg = await dev.next();
            assert.equal(msg.messageId, m.messageId, `delivery ${attempt}`);
            assert.equal(deliveryCountOf(msg), attempt - 1, `iothub-deliverycount of delivery ${attempt}`);
            await withTimeout(dev.client.abandon(msg), `abandon(delivery ${attempt})`);
          }
          // Queued behind a third delivery if there were one.
          await service.send(deviceId, marker);
          const after = await dev.next();
          assert.equal(after.messageId, marker.messageId, 'a message abandoned max-delivery-count times was delivered again');
          await withTimeout(dev.client.complete(after), 'complete(marker)');
          await waitQueueEmpty(deviceId, 'the dead-lettered message must leave the queue');
          assert.deepEqual(dev.pending(), [], 'nothing else was delivered or reported to the device');
        } finally {
          await dev.close();
        }
        await service.expectFeedback(deviceId, { [m.messageId]: 'DeliveryCountExceeded', [marker.messageId]: 'Success' });
        assert.deepEqual(service.errors(), [], 'service client errors');
      } finally {
        await service.close();
      }
    });

  test(`${name}: a message whose expiry passes before any device receives it: feedback Expired`,
    { timeout: TEST_TIMEOUT_MS }, async () => {
      const { deviceId } = createDevice(`expiry-${tag}`);
      const m = { body: 'nobody will read me in time', messageId: `expiry-${randomUUID()}` };
      const service = await openService(Service);
      try {
        // absolute-expiry-time 2 s from now; no device ever connects. As epoch
        // milliseconds: this SDK version cannot encode a Date there (rhea
        // fails with "value.copy is not a function").
        await service.send(deviceId, { ...m, expiryTimeUtc: Date.now() + 2000 });
        await service.expectFeedback(deviceId, { [m.messageId]: 'Expired' });
        await waitQueueEmpty(deviceId, 'the expired message must leave the queue');
        assert.deepEqual(service.errors(), [], 'service client errors');
      } finally {
        await service.close();
      }
    });

  test(`${name}: a device with a wrong key is refused: open() fails with UnauthorizedError`,
    { timeout: TEST_TIMEOUT_MS }, async () => {
      const { deviceId, connectionString } = createDevice(`badkey-${tag}`);
      // A waiting message makes the point: with a bad key it must stay queued.
      sendC2d(deviceId, { body: 'not for impostors', messageId: `badkey-${randomUUID()}` });
      const wrongKey = randomBytes(32).toString('base64');
      const impostor = connectionString.replace(/SharedAccessKey=[^;]+/, `SharedAccessKey=${wrongKey}`);
      assert.notEqual(impostor, connectionString);

      const client = DeviceClient.fromConnectionString(impostor, Device);
      // Errors the client emits after the failed open are not this test's subject.
      client.on('error', () => {});
      try {
        await client.setOptions({ ca: caPem });
        const err = await expectFailure(client.open(), 'device client.open() with a wrong key');
        // azure-iot-amqp-base's CBS client turns a put-token status-code other than
        // 200 into UnauthorizedError (amqp_cbs.js). Compared by name: the transport
        // may load its own copy of azure-iot-common.
        assert.equal(err?.constructor?.name, 'UnauthorizedError', `open() failed with ${describe(err)}`);
      } finally {
        await withTimeout(client.close(), 'device client.close()');
      }
      assert.equal(queuedCount(deviceId), 1, 'the queued message must stay queued for the real device');
    });

  test(`${name}: a send to an unknown device fails with DeviceNotFoundError, and the service client still sends`,
    { timeout: TEST_TIMEOUT_MS }, async () => {
      const { deviceId } = createDevice(`unknown-${tag}`);
      const missing = `compat-node-missing-${randomUUID()}`;
      const service = await openService(Service);
      try {
        const err = await expectFailure(
          service.send(missing, { body: 'nobody home', messageId: `missing-${randomUUID()}` }),
          `send to the unknown device ${missing}`,
        );
        // The hub rejects the transfer with amqp:not-found (404001 DeviceNotFound);
        // azure-iothub's translateError maps that condition to DeviceNotFoundError.
        assert.equal(err?.constructor?.name, 'DeviceNotFoundError', `send failed with ${describe(err)}`);
        assert.equal(err.amqpError?.condition, 'amqp:not-found', `AMQP error: ${describe(err)}`);

        // The refusal settles one transfer; the link and connection stay usable.
        const m = { body: 'after the refusal', messageId: `after-${randomUUID()}`, ack: 'none' };
        await service.send(deviceId, m);
        assert.equal(queuedCount(deviceId), 1, 'the send after the refusal is queued');
        assert.deepEqual(service.errors(), [], 'service client errors');
      } finally {
        await service.close();
      }
    });
}
