// GatewayClient against a fake GatewayService served by grpc-js on 127.0.0.1, port 0.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

import {
  GatewayClient,
  GatewayError,
  InvalidRequestError,
  LOADER_OPTIONS,
  packageDefinition,
  status,
} from '../index.js';

const { GatewayService } = grpc.loadPackageDefinition(packageDefinition).imgate.v1;

// google.rpc.Status with a BadRequest detail, built the way a server's protobuf library
// would; this JSON descriptor exists only to encode the test's trailer.
const rpcDefinitions = protoLoader.fromJSON(
  {
    nested: {
      google: {
        nested: {
          protobuf: {
            nested: {
              Any: {
                fields: { typeUrl: { type: 'string', id: 1 }, value: { type: 'bytes', id: 2 } },
              },
            },
          },
          rpc: {
            nested: {
              Status: {
                fields: {
                  code: { type: 'int32', id: 1 },
                  message: { type: 'string', id: 2 },
                  details: { rule: 'repeated', type: 'google.protobuf.Any', id: 3 },
                },
              },
              BadRequest: {
                fields: { fieldViolations: { rule: 'repeated', type: 'FieldViolation', id: 1 } },
                nested: {
                  FieldViolation: {
                    fields: {
                      field: { type: 'string', id: 1 },
                      description: { type: 'string', id: 2 },
                    },
                  },
                },
              },
              // Only here to obtain serializers: proto-loader exposes them per method.
              Encoder: {
                methods: {
                  Status: { requestType: 'Status', responseType: 'Status' },
                  BadRequest: { requestType: 'BadRequest', responseType: 'BadRequest' },
                },
              },
            },
          },
        },
      },
    },
  },
  LOADER_OPTIONS,
)['google.rpc.Encoder'];

function badRequestTrailer(message, violations) {
  const badRequest = rpcDefinitions.BadRequest.requestSerialize({ fieldViolations: violations });
  const status_ = rpcDefinitions.Status.requestSerialize({
    code: status.INVALID_ARGUMENT,
    message,
    details: [{ typeUrl: 'type.googleapis.com/google.rpc.BadRequest', value: badRequest }],
  });
  const metadata = new grpc.Metadata();
  metadata.set('grpc-status-details-bin', status_);
  return metadata;
}

const received = [];
const uploads = [];
let uploadPagesSeen = 0;

function batchOf(batchId, state) {
  return {
    batchId,
    state,
    total: 3,
    accepted: 1,
    pending: 2,
    createTime: { seconds: 1, nanos: 0 },
  };
}
let cancelledCalls = 0;
let lastAuthorization = [];

function outcome(recipientId, index) {
  return recipientId.startsWith('ghost')
    ? {
        recipientId,
        index,
        state: 'DELIVERY_STATE_FAILED',
        reason: 'FAILURE_REASON_RECIPIENT_NOT_FOUND',
        vendorCode: '70107',
        attempts: 1,
      }
    : {
        recipientId,
        index,
        state: 'DELIVERY_STATE_ACCEPTED',
        vendorMessageId: `m${index}`,
        attempts: 1,
      };
}

const fakeGateway = {
  BatchSend(call) {
    received.push({ request: call.request, metadata: call.metadata.getMap() });
    const ids = call.request.recipientIds;
    if (ids.length === 0) {
      call.emit('error', {
        code: status.INVALID_ARGUMENT,
        details: 'invalid request',
        metadata: badRequestTrailer('invalid request', [
          { field: 'recipient_ids', description: 'must not be empty' },
        ]),
      });
      return;
    }
    if (ids.includes('slow')) {
      // Never finishes on its own: for the cancellation test.
      call.write({ outcomes: [outcome(ids[0], 0)] });
      call.on('cancelled', () => cancelledCalls++);
      return;
    }
    const unique = [...new Set(ids)];
    const outcomes = unique.map((id) => outcome(id, ids.indexOf(id)));
    for (let start = 0; start < outcomes.length; start += 2) {
      const batch = outcomes.slice(start, start + 2);
      if (batch.some((o) => o.recipientId === 'crash')) {
        call.emit('error', { code: status.INTERNAL, details: 'vendor session lost' });
        return;
      }
      call.write({ outcomes: batch });
    }
    const failed = outcomes.filter((o) => o.state === 'DELIVERY_STATE_FAILED').length;
    call.write({
      summary: {
        total: unique.length,
        accepted: unique.length - failed,
        failed,
        duplicatesRemoved: ids.length - unique.length,
        vendorCalls: 1,
        elapsedMs: 12,
      },
    });
    call.end();
  },
  SubmitBatch(call, callback) {
    received.push({ request: call.request, metadata: call.metadata.getMap() });
    callback(null, batchOf(call.request.recipientList || 'ids', 'BATCH_STATE_QUEUED'));
  },
  UploadRecipients(call, callback) {
    const pages = [];
    const seen = new Set();
    let duplicates = 0;
    let refused = false;
    call.on('data', (page) => {
      uploadPagesSeen++;
      if (refused) {
        return;
      }
      pages.push(page);
      for (const [position, id] of page.recipientIds.entries()) {
        if (id.trim() !== id) {
          refused = true;
          callback({
            code: status.INVALID_ARGUMENT,
            details: `recipient_ids: page ${pages.length - 1}, position ${position}: whitespace`,
          });
          return;
        }
        seen.has(id) ? duplicates++ : seen.add(id);
      }
    });
    call.on('end', () => {
      uploads.push(pages);
      if (!refused) {
        callback(null, {
          recipientList: `list-${uploads.length}`,
          count: seen.size,
          duplicatesRemoved: duplicates,
        });
      }
    });
  },
  WatchBatch(call) {
    const from = call.request.cursor === '' ? 0 : Number(call.request.cursor);
    const ids = ['w0', 'w1', 'w2', 'w3', 'w4'];
    for (let index = from; index < ids.length; index++) {
      call.write({ outcomes: [outcome(ids[index], index)], cursor: String(index + 1) });
    }
    call.write({ cursor: String(ids.length), summary: { total: 5, accepted: 5 } });
    call.end();
  },
  GetBatch(call, callback) {
    if (call.request.batchId !== 'b1') {
      callback({ code: status.NOT_FOUND, details: `batch_id: no batch ${call.request.batchId}` });
      return;
    }
    callback(null, batchOf('b1', 'BATCH_STATE_RUNNING'));
  },
  ListBatches(call, callback) {
    received.push({ request: call.request });
    callback(null, { batches: [batchOf('b2', 'BATCH_STATE_DONE')], nextPageToken: 'next' });
  },
  CancelBatch(call, callback) {
    callback(null, batchOf(call.request.batchId, 'BATCH_STATE_CANCELLING'));
  },
  RecallBatch(call, callback) {
    received.push({ request: call.request });
    if (call.request.batchId === 'cannot') {
      callback({ code: status.FAILED_PRECONDITION, details: 'backend yx cannot recall' });
      return;
    }
    const recall = batchOf(`recall-${call.request.batchId}`, 'BATCH_STATE_RUNNING');
    callback(null, { ...recall, recallOf: call.request.batchId });
  },
  ListBackends(call, callback) {
    lastAuthorization = call.metadata.get('authorization');
    callback(null, {
      backends: [
        { name: 'tencent', vendor: 'tencent', state: 'BACKEND_STATE_SERVING', sandbox: true },
      ],
      defaultBackend: 'tencent',
    });
  },
};

let server;
let client;
let target;

before(async () => {
  server = new grpc.Server();
  server.addService(GatewayService.service, fakeGateway);
  const port = await new Promise((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, boundPort) =>
      error ? reject(error) : resolve(boundPort),
    ),
  );
  target = `127.0.0.1:${port}`;
  client = new GatewayClient(target);
});

after(() => {
  client.close();
  server.forceShutdown();
});

test('streams every outcome across batched responses, then the summary', async () => {
  const stream = client.batchSend(
    {
      recipientIds: ['alice', 'ghost1', 'bob', 'alice', 'carol'],
      message: { text: { text: 'hi' }, extension: '{"k":"v"}' },
      backend: 'tencent',
      senderId: 'ops',
      requestId: 'req-1',
      options: { pushEnabled: false },
    },
    { timeoutMs: 5000, metadata: { 'x-team': 'growth' } },
  );
  const outcomes = [];
  for await (const outcome of stream) {
    assert.equal(stream.summary, null);
    outcomes.push(outcome);
  }
  assert.deepEqual(
    outcomes.map((o) => [o.recipientId, o.index, o.state, o.reason]),
    [
      ['alice', 0, 'DELIVERY_STATE_ACCEPTED', 'FAILURE_REASON_UNSPECIFIED'],
      ['ghost1', 1, 'DELIVERY_STATE_FAILED', 'FAILURE_REASON_RECIPIENT_NOT_FOUND'],
      ['bob', 2, 'DELIVERY_STATE_ACCEPTED', 'FAILURE_REASON_UNSPECIFIED'],
      ['carol', 4, 'DELIVERY_STATE_ACCEPTED', 'FAILURE_REASON_UNSPECIFIED'],
    ],
  );
  assert.equal(outcomes[0].vendorMessageId, 'm0');
  assert.deepEqual(stream.summary, {
    total: 4,
    accepted: 3,
    failed: 1,
    uncertain: 0,
    duplicatesRemoved: 1,
    vendorCalls: 1,
    elapsedMs: 12,
  });
  assert.equal(stream.finished, true);

  const { request, metadata } = received.at(-1);
  assert.equal(request.message.text.text, 'hi');
  assert.equal(request.message.extension, '{"k":"v"}');
  assert.deepEqual(
    [request.backend, request.senderId, request.requestId],
    ['tencent', 'ops', 'req-1'],
  );
  assert.equal(request.options.pushEnabled, false);
  assert.equal(metadata['x-team'], 'growth');
});

test('collect() returns the outcomes and the summary', async () => {
  const { outcomes, summary } = await client
    .batchSend({ recipientIds: ['dave'], message: { tip: { text: 'note' } } })
    .collect();
  assert.deepEqual(
    outcomes.map((o) => o.recipientId),
    ['dave'],
  );
  assert.equal(summary.total, 1);
});

test('INVALID_ARGUMENT surfaces as InvalidRequestError with its message and violations', async () => {
  const stream = client.batchSend({ recipientIds: [], message: { text: { text: 'hi' } } });
  await assert.rejects(stream.collect(), (error) => {
    assert.ok(error instanceof InvalidRequestError);
    assert.ok(error instanceof GatewayError);
    assert.equal(error.code, status.INVALID_ARGUMENT);
    assert.equal(error.details, 'invalid request');
    assert.equal(error.message, 'INVALID_ARGUMENT: invalid request');
    assert.deepEqual(error.violations, [
      { field: 'recipient_ids', description: 'must not be empty' },
    ]);
    return true;
  });
});

test('a failure mid-stream raises GatewayError after the outcomes received', async () => {
  const seen = [];
  await assert.rejects(
    async () => {
      for await (const outcome of client.batchSend({
        recipientIds: ['alice', 'bob', 'crash'],
        message: { text: { text: 'hi' } },
      })) {
        seen.push(outcome.recipientId);
      }
    },
    (error) => {
      assert.ok(error instanceof GatewayError);
      assert.ok(!(error instanceof InvalidRequestError));
      assert.equal(error.code, status.INTERNAL);
      assert.equal(error.details, 'vendor session lost');
      return true;
    },
  );
  assert.deepEqual(seen, ['alice', 'bob']);
});

test('leaving the loop early cancels the call', async () => {
  const stream = client.batchSend({
    recipientIds: ['alice', 'slow'],
    message: { text: { text: 'hi' } },
  });
  for await (const outcome of stream) {
    assert.equal(outcome.recipientId, 'alice');
    break;
  }
  assert.equal(stream.finished, true);
  assert.equal(stream.summary, null);
  for (let tries = 0; cancelledCalls === 0 && tries < 100; tries++) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  assert.equal(cancelledCalls, 1);
});

test('listBackends', async () => {
  const response = await client.listBackends({ timeoutMs: 5000 });
  assert.equal(response.defaultBackend, 'tencent');
  assert.deepEqual(
    response.backends.map((b) => [b.name, b.state, b.limits]),
    [['tencent', 'BACKEND_STATE_SERVING', null]],
  );
});

test('an unreachable target fails with UNAVAILABLE', async () => {
  const nowhere = new GatewayClient('127.0.0.1:1');
  try {
    await assert.rejects(nowhere.listBackends({ timeoutMs: 2000 }), (error) => {
      assert.ok(error instanceof GatewayError);
      assert.equal(error.code, status.UNAVAILABLE);
      return true;
    });
  } finally {
    nowhere.close();
  }
});

test('recipientIds must be an array', () => {
  assert.throws(() => client.batchSend({ recipientIds: 'alice', message: {} }), TypeError);
});

test('a token goes with every call as authorization: Bearer', async () => {
  await client.listBackends({ timeoutMs: 5000 });
  assert.deepEqual(lastAuthorization, []);
  const withToken = new GatewayClient(target, { token: 'tok-123' });
  try {
    await withToken.listBackends({ timeoutMs: 5000, metadata: { 'x-extra': '1' } });
    assert.deepEqual(lastAuthorization, ['Bearer tok-123']);
  } finally {
    withToken.close();
  }
});

test('caFile: TLS to a gateway whose certificate that CA signed', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'imgate-node-tls-'));
  const [cert, key] = [join(dir, 'server.pem'), join(dir, 'server.key')];
  // Self-signed for 127.0.0.1: its own CA.
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-days',
      '1',
      '-subj',
      '/CN=localhost',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
    ],
    { stdio: 'ignore' },
  );
  const tlsServer = new grpc.Server();
  tlsServer.addService(GatewayService.service, fakeGateway);
  const credentials = grpc.ServerCredentials.createSsl(null, [
    { cert_chain: readFileSync(cert), private_key: readFileSync(key) },
  ]);
  const port = await new Promise((resolve, reject) =>
    tlsServer.bindAsync('127.0.0.1:0', credentials, (error, boundPort) =>
      error ? reject(error) : resolve(boundPort),
    ),
  );
  const tlsClient = new GatewayClient(`127.0.0.1:${port}`, { caFile: cert, token: 't' });
  const plain = new GatewayClient(`127.0.0.1:${port}`);
  try {
    const response = await tlsClient.listBackends({ timeoutMs: 5000 });
    assert.equal(response.defaultBackend, 'tencent');
    assert.deepEqual(lastAuthorization, ['Bearer t']);
    await assert.rejects(plain.listBackends({ timeoutMs: 2000 }), (error) => {
      assert.equal(error.code, status.UNAVAILABLE);
      return true;
    });
    assert.throws(() => new GatewayClient('127.0.0.1:1', { certFile: cert }), TypeError);
  } finally {
    tlsClient.close();
    plain.close();
    tlsServer.forceShutdown();
  }
});

test('uploadRecipients streams an async source in pages and resolves to the list', async () => {
  async function* ids() {
    for (let i = 0; i < 25; i++) {
      yield `u${i % 20}`; // 5 duplicates
    }
  }
  const progress = [];
  const list = await client.uploadRecipients(ids(), {
    pageSize: 10,
    requestId: 'up-1',
    onProgress: (sent) => progress.push(sent),
  });
  assert.deepEqual(list, { recipientList: 'list-1', count: 20, duplicatesRemoved: 5 });
  const pages = uploads.at(-1);
  assert.deepEqual(
    pages.map((p) => [p.requestId, p.recipientIds.length]),
    [
      ['up-1', 10],
      ['', 10],
      ['', 5],
    ],
  );
  assert.deepEqual(progress, [10, 20, 25]);
});

test('uploadRecipients reads a file line by line (CRLF, blank lines skipped)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'imgate-node-upload-'));
  const path = join(dir, 'ids.txt');
  writeFileSync(
    path,
    'a\r\nb\n\nc\n' + Array.from({ length: 30_000 }, (_, i) => `x${i}`).join('\n'),
  );
  const list = await client.uploadRecipients({ path });
  assert.equal(list.count, 30_003);
  const pages = uploads.at(-1);
  assert.deepEqual(
    pages.map((p) => p.recipientIds.length),
    [10_000, 10_000, 10_000, 3],
  );
  assert.deepEqual(pages[0].recipientIds.slice(0, 4), ['a', 'b', 'c', 'x0']);
});

test('uploadRecipients: a refused id rejects with the server error and sends no more', async () => {
  function* ids() {
    yield 'ok';
    yield ' bad';
    for (let i = 0; i < 100_000; i++) {
      yield `later${i}`;
    }
  }
  uploadPagesSeen = 0;
  await assert.rejects(client.uploadRecipients(ids(), { pageSize: 2 }), (error) => {
    assert.ok(error instanceof InvalidRequestError);
    assert.match(error.details, /page 0, position 1/);
    return true;
  });
  // The source is not read to its end once the gateway has refused the upload.
  assert.ok(uploadPagesSeen < 100, `${uploadPagesSeen} pages sent after the refusal`);
  await assert.rejects(client.uploadRecipients('ids.txt'), TypeError);
});

test('submitBatch with a recipientList and sendBefore', async () => {
  const sendBefore = new Date(Date.UTC(2030, 0, 1, 0, 0, 0, 250));
  const batch = await client.submitBatch({
    recipientList: 'list-1',
    message: { text: { text: 'hi' } },
    requestId: 'r-9',
    sendBefore,
  });
  assert.equal(batch.batchId, 'list-1');
  assert.equal(batch.state, 'BATCH_STATE_QUEUED');
  const { request } = received.at(-1);
  assert.equal(request.recipientList, 'list-1');
  assert.deepEqual(request.sendBefore, {
    seconds: sendBefore.getTime() / 1000 - 0.25,
    nanos: 250e6,
  });
  assert.throws(() => client.submitBatch({ message: { text: { text: 'x' } } }), TypeError);
});

test('submitBatch with sendAfter schedules it', async () => {
  const sendAfter = new Date(Date.UTC(2030, 0, 1, 9, 30, 0, 0));
  await client.submitBatch({ recipientIds: ['a'], message: { text: { text: 'hi' } }, sendAfter });
  const { request } = received.at(-1);
  assert.deepEqual(request.sendAfter, { seconds: sendAfter.getTime() / 1000, nanos: 0 });
  assert.equal(request.sendBefore, null);
});

test('recallBatch returns the recall batch, or FAILED_PRECONDITION', async () => {
  const recall = await client.recallBatch('b7', { requestId: 'undo-7' });
  assert.deepEqual([recall.batchId, recall.recallOf], ['recall-b7', 'b7']);
  const { request } = received.at(-1);
  assert.deepEqual([request.batchId, request.requestId], ['b7', 'undo-7']);
  await assert.rejects(
    client.recallBatch('cannot'),
    (error) => error.code === status.FAILED_PRECONDITION && /cannot recall/.test(error.details),
  );
});

test('watchBatch follows the cursor: a resumed watch repeats nothing', async () => {
  const first = client.watchBatch('b1');
  const seen = [];
  for await (const outcome of first) {
    seen.push(outcome.recipientId);
    if (seen.length === 2) {
      break;
    }
  }
  assert.equal(first.cursor, '1'); // the second message's outcomes were not all taken
  assert.equal(first.batchId, 'b1');
  const rest = client.watchBatch(first.batchId, { cursor: first.cursor });
  const { outcomes, summary } = await rest.collect();
  assert.deepEqual(
    outcomes.map((o) => o.recipientId),
    ['w1', 'w2', 'w3', 'w4'],
  );
  assert.equal(summary.total, 5);
  assert.equal(rest.cursor, '5');
});

test('getBatch, listBatches, cancelBatch', async () => {
  const batch = await client.getBatch('b1');
  assert.deepEqual([batch.state, batch.total, batch.pending], ['BATCH_STATE_RUNNING', 3, 2]);
  await assert.rejects(client.getBatch('nope'), (error) => error.code === status.NOT_FOUND);
  const page = await client.listBatches({ pageSize: 5, pageToken: 't' });
  assert.deepEqual([page.batches[0].batchId, page.nextPageToken], ['b2', 'next']);
  assert.deepEqual([received.at(-1).request.pageSize, received.at(-1).request.pageToken], [5, 't']);
  assert.equal((await client.cancelBatch('b3')).state, 'BATCH_STATE_CANCELLING');
});
