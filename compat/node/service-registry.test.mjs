// Compatibility test: the official Azure IoT Node service SDK's registry
// (azure-iothub, version pinned in package.json) against a running Courier hub
// over HTTPS, unchanged: create with generated keys, get, update, list,
// statistics, the conflict and not-found errors it maps, delete.
//
// The SDK's REST client has no CA option: scripts/compat-node.sh points
// NODE_EXTRA_CA_CERTS at the hub's CA before node starts. Port 443, as the SDK
// hard-codes it. Environment: COURIER_DATA_DIR (the running hub's data dir).

import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';

import iothub from 'azure-iothub';
import common from 'azure-iot-common';

const { Registry } = iothub;
const { errors } = common;

const COURIER_DATA_DIR = process.env.COURIER_DATA_DIR;
const TEST_TIMEOUT_MS = 60_000;

let registry;

before(() => {
  assert.ok(COURIER_DATA_DIR, 'COURIER_DATA_DIR must name the running hub\'s data dir (scripts/compat-node.sh sets it)');
  assert.ok(process.env.NODE_EXTRA_CA_CERTS, 'NODE_EXTRA_CA_CERTS must name the hub\'s CA (scripts/compat-node.sh sets it)');
  const hub = JSON.parse(readFileSync(path.join(COURIER_DATA_DIR, 'hub.json'), 'utf8'));
  const owner = hub.policies.find((p) => p.keyName === 'iothubowner');
  assert.ok(owner, 'hub.json has no iothubowner policy');
  const cs = `HostName=${hub.hostName};SharedAccessKeyName=iothubowner;SharedAccessKey=${owner.primaryKey}`;
  registry = Registry.fromConnectionString(cs);
});

/**
 * Awaits `promise` and asserts it fails with the SDK error class `ErrorClass`.
 * Compared by name: azure-iothub may load its own copy of azure-iot-common,
 * whose classes are not `instanceof` ours.
 */
async function expectError(promise, ErrorClass, what) {
  let caught;
  try {
    await promise;
  } catch (err) {
    caught = err;
  }
  assert.ok(caught, `${what}: expected ${ErrorClass.name}, but it succeeded`);
  assert.equal(caught?.constructor?.name, ErrorClass.name, `${what}: expected ${ErrorClass.name}, got ${caught?.constructor?.name}: ${caught?.message}`);
  return caught;
}

test('(e) registry: create, get, update, list, statistics, conflict, delete, not found',
  { timeout: TEST_TIMEOUT_MS }, async () => {
    const deviceId = `compat-node-registry-${randomUUID().slice(0, 8)}`;

    // Empty keys ask the hub to generate them (as the SDK's own samples do).
    const created = (await registry.create({
      deviceId,
      status: 'enabled',
      authentication: { type: 'sas', symmetricKey: { primaryKey: '', secondaryKey: '' } },
    })).responseBody;
    assert.equal(created.deviceId, deviceId);
    assert.equal(created.status, 'enabled');
    assert.ok(created.generationId, 'a generation id');
    assert.ok(created.etag, 'an etag');
    const key = created.authentication.symmetricKey.primaryKey;
    assert.equal(Buffer.from(key, 'base64').length, 32, `a generated 256-bit key, got ${key}`);

    const got = (await registry.get(deviceId)).responseBody;
    assert.equal(got.generationId, created.generationId);
    assert.equal(got.etag, created.etag);
    assert.equal(got.cloudToDeviceMessageCount, 0);

    const updated = (await registry.update({
      deviceId,
      status: 'disabled',
      authentication: created.authentication,
    })).responseBody;
    assert.equal(updated.status, 'disabled');
    assert.equal(updated.generationId, created.generationId, 'an update keeps the generation');
    assert.notEqual(updated.etag, created.etag, 'an update changes the etag');
    assert.equal(updated.authentication.symmetricKey.primaryKey, key, 'an update keeps the keys');

    const listed = (await registry.list()).responseBody;
    assert.ok(listed.some((d) => d.deviceId === deviceId && d.status === 'disabled'), 'list shows the device');

    const stats = (await registry.getRegistryStatistics()).responseBody;
    assert.ok(stats.totalDeviceCount >= 1 && stats.disabledDeviceCount >= 1, JSON.stringify(stats));

    await expectError(registry.create({ deviceId }), errors.DeviceAlreadyExistsError, 'create of an existing device');

    await registry.delete(deviceId);
    await expectError(registry.get(deviceId), errors.DeviceNotFoundError, 'get after delete');
  });
