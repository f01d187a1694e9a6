// Compatibility test: self-signed X.509 devices with the official Azure IoT
// Node device SDK (azure-iot-device with its AMQP, MQTT and HTTP transports,
// versions pinned in package.json), unchanged, against a running Courier hub.
//
// The connection string says `x509=true` and carries no key; the certificate
// and its key go to `setOptions({ cert, key })`, as the SDK's X.509 samples
// do. On AMQP the SDK then opens no SASL layer and puts no token on $cbs
// (iothub-wire.md §1.6): the TLS client certificate is the identity. On MQTT
// the CONNECT has no password; on HTTPS the requests carry no Authorization.
//
// Certificates are made with `openssl req -x509` (scripts/test-all.sh installs
// openssl) and registered by SHA-256 thumbprint through the `courier` CLI. A
// second certificate, not registered, must be refused (the SDK reports an
// UnauthorizedError; on HTTPS the poll is answered 401) and take nothing. Messages are sent with
// the CLI (courier-cli.mjs); the device completes each.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { X509Certificate, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import device from 'azure-iot-device';
import deviceAmqp from 'azure-iot-device-amqp';
import deviceMqtt from 'azure-iot-device-mqtt';
import deviceHttp from 'azure-iot-device-http';

import {
  EVENT_TIMEOUT_MS, TEST_TIMEOUT_MS, loadHub, courier, jsonDocuments, ownerConnectionString,
  sendC2d, queuedCount, waitQueueEmpty, withTimeout, eventQueue, observedTransport,
} from './courier-cli.mjs';

const { Client } = device;

/** Every device transport of the SDK, each on the port it hard-codes. */
const TRANSPORTS = [
  { name: 'Amqp (5671)', tag: 'amqp', Transport: deviceAmqp.Amqp },
  { name: 'AmqpWs (443)', tag: 'amqpws', Transport: deviceAmqp.AmqpWs },
  { name: 'Mqtt (8883)', tag: 'mqtt', Transport: deviceMqtt.Mqtt },
  { name: 'MqttWs (443)', tag: 'mqttws', Transport: deviceMqtt.MqttWs },
  // The HTTP transport calls setOptions' callback only when the options hold
  // a receive policy (azure-iot-device-http's Http.setOptions); one poll a
  // second, as in http-device.test.mjs.
  { name: 'Http (443)', tag: 'http', Transport: deviceHttp.Http, options: { http: { receivePolicy: { interval: 1, drain: false } } } },
];

let hub;
let hostName;
let dir;

before(() => {
  hub = loadHub();
  hostName = ownerConnectionString().match(/HostName=([^;]+)/)[1];
  assert.equal(hub.run.amqpPort, 5671, `the hub must serve AMQP on 5671; run.json says ${JSON.stringify(hub.run)}`);
  assert.equal(hub.run.mqttPort, 8883, `the hub must serve MQTT on 8883; run.json says ${JSON.stringify(hub.run)}`);
  assert.equal(hub.run.httpsPort, 443, `the hub must serve HTTPS and WebSockets on 443; run.json says ${JSON.stringify(hub.run)}`);
  dir = mkdtempSync(join(tmpdir(), 'courier-x509-'));
});

after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A fresh self-signed certificate for `cn`: PEM text of the certificate and its key, and its SHA-256 thumbprint. */
function selfSigned(cn) {
  const name = randomUUID();
  const certPath = join(dir, `${name}.pem`);
  const keyPath = join(dir, `${name}-key.pem`);
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', keyPath, '-out', certPath, '-days', '1', '-subj', `/CN=${cn}`,
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  const cert = readFileSync(certPath, 'utf8');
  const thumbprint = new X509Certificate(cert).fingerprint256.replaceAll(':', '');
  return { cert, key: readFileSync(keyPath, 'utf8'), thumbprint };
}

/** Registers `deviceId` as a self-signed X.509 device with `thumbprint`. */
function createX509Device(deviceId, thumbprint) {
  const created = jsonDocuments(courier('device', 'create', deviceId, '--x509', '--primary-thumbprint', thumbprint, '--json'));
  assert.ok(JSON.stringify(created).includes(deviceId), `device create did not report ${deviceId}: ${JSON.stringify(created)}`);
}

/**
 * Opens an X.509 device client; resolves with it and a `next(what)` that
 * resolves with the next C2D message (or fails on a client error or after
 * EVENT_TIMEOUT_MS).
 */
async function openDevice(deviceId, { cert, key }, Transport, options) {
  const client = Client.fromConnectionString(`HostName=${hostName};DeviceId=${deviceId};x509=true`, Transport);
  const events = eventQueue();
  client.on('error', (err) => events.push({ kind: 'error', value: err }));
  await client.setOptions({ ca: hub.caPem, cert, key, ...options });
  await withTimeout(client.open(), 'device client.open()');
  client.on('message', (msg) => events.push({ kind: 'message', value: msg }));
  return {
    client,
    async next(what) {
      const { kind, value } = await events.next(what);
      if (kind !== 'message') assert.fail(`expected ${what}, the device SDK reported ${value?.name}: ${value?.message}`);
      return value;
    },
  };
}

for (const { name, tag, Transport, options = {} } of TRANSPORTS) {
  test(`${name}: a self-signed X.509 device receives and completes with its certificate; another certificate is refused`,
    { timeout: TEST_TIMEOUT_MS }, async () => {
      const deviceId = `compat-node-x509-${tag}-${randomUUID().slice(0, 8)}`;
      const identity = selfSigned(deviceId);
      createX509Device(deviceId, identity.thumbprint);

      const messageId = `x509-${tag}-${randomUUID()}`;
      sendC2d(deviceId, { body: 'for the certificate', messageId, ack: 'none' });
      const dev = await openDevice(deviceId, identity, Transport, options);
      try {
        const msg = await dev.next(`message ${messageId}`);
        assert.equal(msg.messageId, messageId, 'the message sent');
        assert.deepEqual(msg.getBytes(), Buffer.from('for the certificate'), 'its body');
        await withTimeout(dev.client.complete(msg), 'device client.complete()');
        await waitQueueEmpty(deviceId, 'the completed message leaves the queue');
        assert.equal(queuedCount(deviceId), 0);
      } finally {
        await withTimeout(dev.client.close(), 'device client.close()');
      }

      // A certificate the registry does not know must be refused, and take nothing.
      const stranger = selfSigned(deviceId);
      sendC2d(deviceId, { body: 'not for strangers', messageId: `${messageId}-2`, ack: 'none' });
      // On AMQP and MQTT the SDK reports an UnauthorizedError, as the client's
      // `disconnect` (it does not retry it) or `error`; on HTTPS, which has no
      // connection, the failed poll comes on the transport's own 'error' event
      // with the hub's 401.
      const observed = observedTransport(Transport);
      const client = Client.fromConnectionString(`HostName=${hostName};DeviceId=${deviceId};x509=true`, observed.Transport);
      await client.setOptions({ ca: hub.caPem, cert: stranger.cert, key: stranger.key, ...options });
      const refused = new Promise((resolve) => {
        client.on('error', (err) => resolve(err));
        observed.seen.transport.on('error', (err) => resolve(err));
        client.on('disconnect', (result) => resolve(result?.transportObj instanceof Error ? result.transportObj : new Error(`disconnected: ${result?.reason}`)));
        client.on('message', (msg) => resolve(new Error(`a stranger received ${msg.messageId}`)));
      });
      let error;
      try {
        await withTimeout(client.open(), 'device client.open() with an unregistered certificate');
        error = await withTimeout(refused, 'the refusal of an unregistered certificate');
      } catch (err) {
        error = err;
      }
      await withTimeout(client.close().catch(() => {}), 'device client.close()');
      if (tag === 'http') {
        assert.equal(error?.response?.statusCode, 401, `expected the poll to be answered 401, got ${error?.name}: ${error?.message}`);
      } else {
        assert.equal(error?.name, 'UnauthorizedError', `expected a refusal, got ${error?.name}: ${error?.message}`);
      }
      assert.equal(queuedCount(deviceId), 1, 'the stranger took nothing');
    });
}
