// Compatibility test: the official Azure IoT Node device SDK (azure-iot-device +
// azure-iot-device-mqtt, versions pinned in package.json) receiving C2D messages
// from a running Courier hub over MQTT (port 8883) and MQTT over WebSockets
// (port 443), unchanged.
//
// It does not start the hub: scripts/compat-node.sh does, on 8883 and 443,
// because the SDK's MQTT transports always connect to those ports of the
// connection string's HostName. The service side (device create, send,
// feedback, queue depth) goes through the `courier` CLI (courier-cli.mjs).
//
// Over MQTT, mqtt.js PUBACKs each C2D PUBLISH on receipt, which completes the
// message; the SDK's complete() is then a no-op (reject/abandon throw).

import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';

import device from 'azure-iot-device';
import deviceMqtt from 'azure-iot-device-mqtt';

import {
  EVENT_TIMEOUT_MS, TEST_TIMEOUT_MS, loadHub, createDevice, sendC2d, expectFeedback,
  queuedCount, waitQueueEmpty, withTimeout, eventQueue,
} from './courier-cli.mjs';

const { Client } = device;
const { Mqtt, MqttWs } = deviceMqtt;

/** Both MQTT transports of the SDK: TLS on 8883, and WebSockets on 443. */
const TRANSPORTS = [
  { name: 'Mqtt (8883)', tag: 'mqtt', Transport: Mqtt },
  { name: 'MqttWs (443)', tag: 'mqttws', Transport: MqttWs },
];

/** What .NET's `DateTime.ParseExact(v, "o")` accepts for `$.exp` (iothub-wire.md §2.4). */
const DOTNET_ROUND_TRIP_UTC = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$/;

let caPem;

before(() => {
  const hub = loadHub();
  // The SDK has no port settings: anything else cannot work.
  assert.equal(hub.run.mqttPort, 8883, `the hub must serve MQTT on 8883 for the Node SDK; run.json says ${JSON.stringify(hub.run)}`);
  assert.equal(hub.run.httpsPort, 443, `the hub must serve MQTT over WebSockets on 443 for the Node SDK; run.json says ${JSON.stringify(hub.run)}`);
  caPem = hub.caPem;
});

/**
 * Opens an SDK client over `Transport` and starts C2D delivery. `next()` resolves
 * with the next C2D message; it fails at once if the client reported an error
 * first, and after EVENT_TIMEOUT_MS if nothing came.
 */
async function openDevice(connectionString, Transport) {
  const client = Client.fromConnectionString(connectionString, Transport);
  const events = eventQueue();
  client.on('error', (err) => events.push({ kind: 'error', value: err }));
  await client.setOptions({ ca: caPem });
  await withTimeout(client.open(), 'client.open()');
  // Adding the first 'message' listener makes the SDK subscribe to the C2D topic.
  client.on('message', (msg) => events.push({ kind: 'message', value: msg }));

  return {
    client,
    async next() {
      const { kind, value } = await events.next('a C2D message or client error');
      if (kind !== 'message') assert.fail(`expected a C2D message, the SDK reported ${value?.name}: ${value?.message}`);
      return value;
    },
    /** Events that came but were never awaited (descriptions). */
    pending: () => events.pending().map(({ kind, value }) => (kind === 'message' ? `message ${value.messageId}` : `${value?.name}: ${value?.message}`)),
    close: () => withTimeout(client.close(), 'client.close()'),
  };
}

/** The message's application properties as the SDK exposes them (key → value). */
function propsOf(msg) {
  return Object.fromEntries(msg.properties.propertyList.map(({ key, value }) => [key, value]));
}

/** Message `i` of the receive scenario, with ids and properties that need encoding. */
function awkwardMessage(deviceId, i) {
  return {
    body: JSON.stringify({ seq: i, device: deviceId, text: 'café & crème 100% /ok?' }),
    // IoT Hub message ids allow these punctuation characters; each needs encoding in a topic.
    messageId: `node-${i}-${randomUUID()}:+%_#*?!(),=@;$'`,
    correlationId: `corr ${i}/é&x=y+z%41`,
    contentType: 'application/json',
    contentEncoding: 'utf-8',
    props: {
      seq: String(i),
      // Values: space, '/', '&', '=', '+', '%', '?', '#', and non-ASCII.
      text: `a b/c&d=e+f%20g?h#i é ${i}`,
      unicode: 'crème brûlée ✓',
      // Keys: HTTP header name characters, which the CLI's send path carries
      // (lower-case, as HTTP header names arrive lower-cased at the hub).
      'amp&key': 'x=y',
      'pct%key': '100%',
      'plus+key': '1+1=2',
      "x!#$%&'*+-.^_`|~": 'every punctuation a key may hold',
    },
  };
}

for (const { name, tag, Transport } of TRANSPORTS) {
  test(`${name}: receive three messages in order with properties; PUBACK completes them; feedback Success`,
    { timeout: TEST_TIMEOUT_MS }, async () => {
      const { deviceId, connectionString } = createDevice(`recv-${tag}`);
      const sent = [0, 1, 2].map((i) => awkwardMessage(deviceId, i));
      // The first message waits in the queue before the device connects: it must
      // flow once the device subscribes. The others arrive while it is connected.
      sendC2d(deviceId, sent[0]);

      const dev = await openDevice(connectionString, Transport);
      try {
        for (const m of sent.slice(1)) sendC2d(deviceId, m);
        for (const [i, m] of sent.entries()) {
          const msg = await dev.next();
          assert.equal(msg.messageId, m.messageId, `message ${i}: messages arrive in send order`);
          assert.deepEqual(msg.getBytes(), Buffer.from(m.body, 'utf8'), `message ${i}: body bytes`);
          assert.equal(msg.correlationId, m.correlationId, `message ${i}: correlation id ($.cid)`);
          assert.equal(msg.contentType, m.contentType, `message ${i}: content type ($.ct)`);
          assert.equal(msg.contentEncoding, m.contentEncoding, `message ${i}: content encoding ($.ce)`);
          assert.equal(msg.to, `/devices/${deviceId}/messages/devicebound`, `message ${i}: $.to`);
          // azure-iot-common's Message starts with userId ''; only $.uid would change it.
          assert.equal(msg.userId, '', `message ${i}: no user id was sent`);
          // The Node SDK has no ack field: iothub-ack lands among the application properties.
          assert.deepEqual(propsOf(msg), { ...m.props, 'iothub-ack': 'full' },
            `message ${i}: application properties (and no other keys: system properties the SDK does not know would show up here)`);
          if (msg.expiryTimeUtc !== undefined) {
            assert.match(msg.expiryTimeUtc, DOTNET_ROUND_TRIP_UTC, `message ${i}: $.exp must be yyyy-MM-ddTHH:mm:ss.fffffffZ`);
          }
          // A no-op over MQTT (mqtt.js already PUBACKed), but it must not fail.
          await withTimeout(dev.client.complete(msg), `complete(message ${i})`);
        }
        await waitQueueEmpty(deviceId, 'the PUBACKs should have completed every message');
        assert.deepEqual(dev.pending(), [], 'nothing else was delivered or reported');
      } finally {
        await dev.close();
      }

      expectFeedback(deviceId, Object.fromEntries(sent.map((m) => [m.messageId, 'Success'])));
    });

  test(`${name}: a device with a wrong key is refused: open() fails with UnauthorizedError`,
    { timeout: TEST_TIMEOUT_MS }, async () => {
      const { deviceId, connectionString } = createDevice(`badkey-${tag}`);
      // A waiting message makes the point: with a bad key it must stay queued.
      sendC2d(deviceId, { body: '{}', messageId: `badkey-${randomUUID()}` });
      const wrongKey = randomBytes(32).toString('base64');
      const impostor = connectionString.replace(/SharedAccessKey=[^;]+/, `SharedAccessKey=${wrongKey}`);
      assert.notEqual(impostor, connectionString);

      const client = Client.fromConnectionString(impostor, Transport);
      // Errors the client emits after the failed open are not this test's subject.
      client.on('error', () => {});
      try {
        await client.setOptions({ ca: caPem });
        const err = await withTimeout(client.open(), 'client.open() with a wrong key').then(
          () => assert.fail('open() with a wrong key succeeded'),
          (e) => e,
        );
        // azure-iot-mqtt-base translates CONNACK 4 (bad user name or password) and
        // 5 (not authorized) to UnauthorizedError; a connection closed without a
        // CONNACK would be a NotConnectedError or a timeout instead. Compared by
        // name: the transport may load its own copy of azure-iot-common.
        assert.equal(err?.constructor?.name, 'UnauthorizedError', `open() failed with ${err?.constructor?.name}: ${err?.message}`);
      } finally {
        await withTimeout(client.close(), 'client.close()');
      }
      assert.equal(queuedCount(deviceId), 1, 'the queued message must stay queued for the real device');
    });
}
