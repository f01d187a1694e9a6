// Compatibility test: the official Azure IoT Node device SDK (azure-iot-device +
// azure-iot-device-http, versions pinned in package.json) receiving and settling
// C2D messages from a running Courier hub over HTTPS, unchanged.
//
// It does not start the hub: scripts/compat-node.sh does, on port 443, because the
// SDK's HTTP transport always connects to port 443 of the connection string's
// HostName. The service side (device create, send, feedback) goes through the
// `courier` CLI so this file exercises only the device SDK.
//
// Environment: COURIER_BIN (path to the courier binary), COURIER_DATA_DIR (the
// running hub's data dir, holding run.json and the CA).

import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';

import device from 'azure-iot-device';
import deviceHttp from 'azure-iot-device-http';

const { Client, Message } = device;
const { Http } = deviceHttp;

/** Generous bound for one awaited event (a message, an error, a CLI call). */
const EVENT_TIMEOUT_MS = 30_000;
/** Feedback may be batched by the hub (IoT Hub batches for up to 15 s), so allow more. */
const FEEDBACK_TIMEOUT_MS = 60_000;
/** Per-test bound; each test awaits a handful of events. */
const TEST_TIMEOUT_MS = 180_000;

const COURIER_BIN = process.env.COURIER_BIN;
const COURIER_DATA_DIR = process.env.COURIER_DATA_DIR;

let caPem;

before(() => {
  assert.ok(COURIER_BIN, 'COURIER_BIN must name the courier binary (scripts/compat-node.sh sets it)');
  assert.ok(COURIER_DATA_DIR, 'COURIER_DATA_DIR must name the running hub\'s data dir (scripts/compat-node.sh sets it)');
  const run = JSON.parse(readFileSync(path.join(COURIER_DATA_DIR, 'run.json'), 'utf8'));
  // The SDK has no port setting for HTTP: anything but 443 cannot work.
  assert.equal(run.httpsPort, 443, `the hub must serve HTTPS on 443 for the Node SDK; run.json says ${run.httpsPort}`);
  caPem = readFileSync(run.caPath ?? path.join(COURIER_DATA_DIR, 'tls', 'ca.pem'), 'utf8');
});

// ---------------------------------------------------------------------------
// Service side, through the courier CLI.

/**
 * Runs the courier CLI against the hub. The hub-selection flags go after the
 * command words, where they are accepted whether the CLI defines them on the
 * top-level command or on each subcommand.
 */
function courier(...args) {
  const argv = [...args, '--data-dir', COURIER_DATA_DIR];
  try {
    return execFileSync(COURIER_BIN, argv, {
      encoding: 'utf8',
      timeout: EVENT_TIMEOUT_MS,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  } catch (err) {
    const stderr = err.stderr ? String(err.stderr).trim() : '';
    throw new Error(`courier ${argv.join(' ')} failed (${err.status ?? err.signal ?? err.code}): ${stderr || err.message}`);
  }
}

/** Creates a fresh device and returns its id and connection string. */
function createDevice(scenario) {
  const deviceId = `compat-node-${scenario}-${randomUUID().slice(0, 8)}`;
  const created = jsonDocuments(courier('device', 'create', deviceId, '--json'));
  assert.ok(JSON.stringify(created).includes(deviceId), `device create did not report ${deviceId}: ${JSON.stringify(created)}`);
  const out = courier('device', 'connection-string', deviceId);
  const connectionString = out.match(/HostName=[^;\s]+;DeviceId=[^;\s]+;SharedAccessKey=[^;\s]+/)?.[0];
  assert.ok(connectionString, `device connection-string printed no device connection string: ${out}`);
  return { deviceId, connectionString };
}

/** Sends one C2D message with ack=full; `props` are application properties. */
function sendC2d(deviceId, { body, messageId, props = {} }) {
  const args = ['c2d', 'send', deviceId, body, '--json', '--message-id', messageId, '--ack', 'full'];
  for (const [k, v] of Object.entries(props)) args.push('--prop', `${k}=${v}`);
  assert.ok(jsonDocuments(courier(...args)).length > 0, 'c2d send printed no JSON');
}

/** The JSON documents the CLI printed with --json: one, or one per line. */
function jsonDocuments(stdout) {
  const text = stdout.trim();
  if (!text) return [];
  try {
    return [JSON.parse(text)];
  } catch {
    return text.split('\n').filter((line) => line.trim()).map((line) => JSON.parse(line));
  }
}

/** Collects every feedback record in whatever JSON shape the CLI prints (array, batches, lines). */
function feedbackRecords(stdout) {
  const values = jsonDocuments(stdout);
  const records = [];
  const walk = (v) => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === 'object') {
      if ('originalMessageId' in v && 'statusCode' in v) records.push(v);
      else Object.values(v).forEach(walk);
    }
  };
  values.forEach(walk);
  return records;
}

/**
 * Reads feedback until every message id in `expected` (id → statusCode) has a
 * record for `deviceId`, then checks each has exactly one record with that status.
 */
function expectFeedback(deviceId, expected) {
  const deadline = Date.now() + FEEDBACK_TIMEOUT_MS;
  const seen = new Map();
  const missing = () => Object.keys(expected).filter((id) => !seen.has(id));
  while (missing().length > 0) {
    assert.ok(Date.now() < deadline,
      `no feedback for ${missing().join(', ')} within ${FEEDBACK_TIMEOUT_MS} ms; got ${JSON.stringify([...seen])}`);
    // One batch per call (the hub may put several records in one batch); the CLI
    // completes what it prints, and prints nothing if no batch came in time.
    const out = courier('feedback', '--json', '--count', '1', '--wait', '10s');
    for (const r of feedbackRecords(out)) {
      if (r.deviceId !== deviceId) continue;
      if (!seen.has(r.originalMessageId)) seen.set(r.originalMessageId, []);
      seen.get(r.originalMessageId).push(r.statusCode);
    }
  }
  const got = Object.fromEntries(seen);
  const want = Object.fromEntries(Object.entries(expected).map(([id, code]) => [id, [code]]));
  assert.deepEqual(got, want, 'feedback records for this device');
}

// ---------------------------------------------------------------------------
// Device side, through the official SDK.

/**
 * Opens an SDK client over HTTPS. `next()` resolves with the next C2D message and
 * `nextError()` with the next receive error; each fails at once if the other kind
 * of event comes first, and after EVENT_TIMEOUT_MS if none does.
 */
async function openDevice(connectionString) {
  // The HTTP transport reports receive failures only on its own 'error' event
  // (the Client just logs them), so keep hold of the transport the SDK builds.
  let transport;
  class ObservedHttp extends Http {
    constructor(authenticationProvider) {
      super(authenticationProvider);
      transport = this;
    }
  }
  const client = Client.fromConnectionString(connectionString, ObservedHttp);
  const events = [];
  const waiters = [];
  const push = (event) => {
    const waiter = waiters.shift();
    if (waiter) waiter(event);
    else events.push(event);
  };
  const nextEvent = () => {
    if (events.length > 0) return Promise.resolve(events.shift());
    return new Promise((resolve, reject) => {
      const waiter = (event) => {
        clearTimeout(timer);
        resolve(event);
      };
      const timer = setTimeout(() => {
        waiters.splice(waiters.indexOf(waiter), 1);
        reject(new Error(`no C2D message or receive error within ${EVENT_TIMEOUT_MS} ms`));
      }, EVENT_TIMEOUT_MS);
      waiters.push(waiter);
    });
  };
  transport.on('error', (err) => push({ kind: 'error', value: err }));
  client.on('error', (err) => push({ kind: 'error', value: err }));

  await client.open();
  // One setOptions call: the transport keeps only the last options object, so
  // `ca` and the receive policy must travel together. drain=false and one poll
  // a second keep a single receive in flight, so arrival order is queue order.
  await client.setOptions({ ca: caPem, http: { receivePolicy: { interval: 1, drain: false } } });
  // Adding the first 'message' listener starts the SDK's polling.
  client.on('message', (msg) => push({ kind: 'message', value: msg }));

  return {
    client,
    async next() {
      const { kind, value } = await nextEvent();
      if (kind !== 'message') assert.fail(`expected a C2D message, the SDK reported ${describeError(value)}`);
      return value;
    },
    async nextError() {
      const { kind, value } = await nextEvent();
      if (kind !== 'error') assert.fail(`expected a receive error, the SDK received message ${value.messageId}`);
      return value;
    },
    /** Receive errors reported but never awaited (descriptions). */
    pendingErrors: () => events.filter((e) => e.kind === 'error').map((e) => describeError(e.value)),
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
