// Shared by the compat tests: the service side of each scenario (device create,
// send, feedback, queue depth) through the `courier` CLI, so the test files
// exercise only the SDK under test; plus the hub facts they all check.
//
// Environment: COURIER_BIN (path to the courier binary), COURIER_DATA_DIR (the
// running hub's data dir, holding run.json and the CA); scripts/compat-node.sh
// sets both.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';

/** Generous bound for one awaited event (a message, an error, a CLI call). */
export const EVENT_TIMEOUT_MS = 30_000;
/** Feedback may be batched by the hub (IoT Hub batches for up to 15 s), so allow more. */
export const FEEDBACK_TIMEOUT_MS = 60_000;
/** Per-test bound; each test awaits a handful of events. */
export const TEST_TIMEOUT_MS = 180_000;
/** Between two looks at a device's queue depth while waiting for it to drain. */
const POLL_INTERVAL_MS = 200;

const COURIER_BIN = process.env.COURIER_BIN;
const COURIER_DATA_DIR = process.env.COURIER_DATA_DIR;

/** The running hub's run.json and CA (PEM text); asserts the environment names them. */
export function loadHub() {
  assert.ok(COURIER_BIN, 'COURIER_BIN must name the courier binary (scripts/compat-node.sh sets it)');
  assert.ok(COURIER_DATA_DIR, 'COURIER_DATA_DIR must name the running hub\'s data dir (scripts/compat-node.sh sets it)');
  const run = JSON.parse(readFileSync(path.join(COURIER_DATA_DIR, 'run.json'), 'utf8'));
  const caPem = readFileSync(run.caPath ?? path.join(COURIER_DATA_DIR, 'tls', 'ca.pem'), 'utf8');
  return { run, caPem };
}

/**
 * Runs the courier CLI against the hub. The hub-selection flags go after the
 * command words, where they are accepted whether the CLI defines them on the
 * top-level command or on each subcommand.
 */
export function courier(...args) {
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

/** The JSON documents the CLI printed with --json: one, or one per line. */
export function jsonDocuments(stdout) {
  const text = stdout.trim();
  if (!text) return [];
  try {
    return [JSON.parse(text)];
  } catch {
    return text.split('\n').filter((line) => line.trim()).map((line) => JSON.parse(line));
  }
}

/**
 * The hub owner policy's connection string (from the data dir's hub.json), as a
 * back-end service would hold it.
 */
export function ownerConnectionString() {
  assert.ok(COURIER_DATA_DIR, 'COURIER_DATA_DIR must name the running hub\'s data dir (scripts/compat-node.sh sets it)');
  const hub = JSON.parse(readFileSync(path.join(COURIER_DATA_DIR, 'hub.json'), 'utf8'));
  const owner = hub.policies.find((p) => p.keyName === 'iothubowner');
  assert.ok(owner, 'hub.json has no iothubowner policy');
  return `HostName=${hub.hostName};SharedAccessKeyName=iothubowner;SharedAccessKey=${owner.primaryKey}`;
}

/**
 * Creates a fresh device and returns its id and connection string; `createArgs`
 * go to `courier device create` (e.g. per-device C2D settings).
 */
export function createDevice(scenario, createArgs = []) {
  const deviceId = `compat-node-${scenario}-${randomUUID().slice(0, 8)}`;
  const created = jsonDocuments(courier('device', 'create', deviceId, ...createArgs, '--json'));
  assert.ok(JSON.stringify(created).includes(deviceId), `device create did not report ${deviceId}: ${JSON.stringify(created)}`);
  const out = courier('device', 'connection-string', deviceId);
  const connectionString = out.match(/HostName=[^;\s]+;DeviceId=[^;\s]+;SharedAccessKey=[^;\s]+/)?.[0];
  assert.ok(connectionString, `device connection-string printed no device connection string: ${out}`);
  return { deviceId, connectionString };
}

/**
 * Sends one C2D message (ack=full unless `ack` says otherwise); `props` are
 * application properties, the other fields are system properties when set.
 */
export function sendC2d(deviceId, { body, messageId, correlationId, contentType, contentEncoding, props = {}, ack = 'full' }) {
  const args = ['c2d', 'send', deviceId, body, '--json', '--message-id', messageId, '--ack', ack];
  if (correlationId !== undefined) args.push('--correlation-id', correlationId);
  if (contentType !== undefined) args.push('--content-type', contentType);
  if (contentEncoding !== undefined) args.push('--content-encoding', contentEncoding);
  for (const [k, v] of Object.entries(props)) args.push('--prop', `${k}=${v}`);
  const sent = jsonDocuments(courier(...args));
  assert.equal(sent[0]?.messageId, messageId, `c2d send reported ${JSON.stringify(sent)}`);
}

/** How many messages the hub holds for the device (cloudToDeviceMessageCount). */
export function queuedCount(deviceId) {
  const [shown] = jsonDocuments(courier('device', 'show', deviceId, '--json'));
  assert.ok(shown, 'device show printed no JSON');
  return shown.cloudToDeviceMessageCount;
}

/** Polls the device's queue depth until it is 0; fails after EVENT_TIMEOUT_MS. */
export async function waitQueueEmpty(deviceId, why) {
  const deadline = Date.now() + EVENT_TIMEOUT_MS;
  for (let count = queuedCount(deviceId); count !== 0; count = queuedCount(deviceId)) {
    assert.ok(Date.now() < deadline, `${deviceId} still has ${count} queued message(s) after ${EVENT_TIMEOUT_MS} ms: ${why}`);
    await new Promise((resolve) => setTimeout(resolve, POLL_INTERVAL_MS));
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
 * The reader settles whole batches, so test files must not read feedback at the
 * same time (scripts/compat-node.sh runs them one after another).
 */
export function expectFeedback(deviceId, expected) {
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

/** Awaits `promise`, failing with "`what` did not settle" after EVENT_TIMEOUT_MS. */
export async function withTimeout(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${EVENT_TIMEOUT_MS} ms`)), EVENT_TIMEOUT_MS);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * A queue of SDK events that a test awaits one at a time: `push(event)` hands
 * an event to the oldest waiter or keeps it; `next(what)` resolves with the
 * next event, failing after `timeoutMs`; `pending()` lists those never awaited.
 */
export function eventQueue(timeoutMs = EVENT_TIMEOUT_MS) {
  const events = [];
  const waiters = [];
  return {
    push(event) {
      const waiter = waiters.shift();
      if (waiter) waiter(event);
      else events.push(event);
    },
    next(what) {
      if (events.length > 0) return Promise.resolve(events.shift());
      return new Promise((resolve, reject) => {
        const waiter = (event) => {
          clearTimeout(timer);
          resolve(event);
        };
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(waiter), 1);
          reject(new Error(`${what}: nothing within ${timeoutMs} ms`));
        }, timeoutMs);
        waiters.push(waiter);
      });
    },
    pending: () => events.slice(),
  };
}

/**
 * A subclass of SDK transport class `Base` that remembers the instance the SDK
 * builds, as `seen.transport`: the HTTP transport reports receive failures
 * only on its own 'error' event, which the Client does not forward.
 */
export function observedTransport(Base) {
  const seen = { transport: undefined };
  class Observed extends Base {
    constructor(...args) {
      super(...args);
      seen.transport = this;
    }
  }
  return { Transport: Observed, seen };
}
