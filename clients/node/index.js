// @imgate/client: Node.js client of the imgate gateway (imgate.v1.GatewayService).
//
// Messages are plain objects shaped by @grpc/proto-loader with these options, so field
// names are lowerCamelCase (keepCase: false: `recipientIds`, `vendorMessageId`), enums are
// their full names as strings ('DELIVERY_STATE_ACCEPTED'), 64-bit integers are Numbers,
// and every field is present in what the server sends (unset messages are null).
import { createReadStream, existsSync, readFileSync } from 'node:fs';
import { once } from 'node:events';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

export { credentials, Metadata, status } from '@grpc/grpc-js';

export const LOADER_OPTIONS = Object.freeze({
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
});

const PROTO_FILE = join('imgate', 'v1', 'gateway.proto');
const packageDir = dirname(fileURLToPath(import.meta.url));
// A published package carries its own copy (see scripts/copy-protos.js); in the repository
// the protos are read where they live.
const protoRoot = [join(packageDir, 'protos'), join(packageDir, '..', '..', 'protos')].find(
  (root) => existsSync(join(root, PROTO_FILE)),
);
if (protoRoot === undefined) {
  throw new Error(`@imgate/client: ${PROTO_FILE} not found next to the package`);
}

export const packageDefinition = protoLoader.loadSync(PROTO_FILE, {
  ...LOADER_OPTIONS,
  includeDirs: [protoRoot],
});
const GatewayService = grpc.loadPackageDefinition(packageDefinition).imgate.v1.GatewayService;

/** The RPC failed; `code` is the gRPC status code (see `status`), `details` its message. */
export class GatewayError extends Error {
  constructor(code, details, metadata) {
    super(`${statusName(code)}: ${details}`);
    this.name = 'GatewayError';
    this.code = code;
    this.details = details;
    this.metadata = metadata;
  }
}

/**
 * The request was refused as a whole (INVALID_ARGUMENT) and nothing was sent;
 * `violations` are the google.rpc.BadRequest field violations: `[{field, description}]`.
 */
export class InvalidRequestError extends GatewayError {
  constructor(code, details, metadata, violations) {
    super(code, details, metadata);
    this.name = 'InvalidRequestError';
    this.violations = violations;
  }
}

/**
 * The outcomes of one BatchSend or WatchBatch call: iterate with `for await`, then read
 * `summary`. `batchId` and `cursor` follow the messages read so far: after a broken stream,
 * `client.watchBatch(stream.batchId, { cursor: stream.cursor })` goes on exactly where it
 * stopped (every outcome once).
 */
export class BatchStream {
  #call;
  #summary = null;
  #finished = false;
  #iterated = false;
  #batchId;
  #cursor;

  constructor(call, { batchId = '', cursor = '' } = {}) {
    this.#call = call;
    this.#batchId = batchId;
    this.#cursor = cursor;
    // Without a listener, the CANCELLED status that follows cancel() would be an
    // unhandled 'error' event; failures still reach the iterator through its own listener.
    call.on('error', () => {});
  }

  /** The batch's id (known from the first message of a BatchSend stream on). */
  get batchId() {
    return this.#batchId;
  }

  /** Where a WatchBatch resumes: after the last message whose outcomes were yielded. */
  get cursor() {
    return this.#cursor;
  }

  /** The BatchSummary once every outcome has been iterated; null before. */
  get summary() {
    return this.#summary;
  }

  /** Whether the call has ended (exhausted, failed or cancelled). */
  get finished() {
    return this.#finished;
  }

  /** Cancel the call: the gateway starts no new vendor call for it. */
  cancel() {
    this.#call.cancel();
  }

  async *[Symbol.asyncIterator]() {
    if (this.#iterated) {
      throw new Error('a BatchStream can be iterated only once');
    }
    this.#iterated = true;
    let summary = null;
    try {
      for await (const response of this.#call) {
        this.#batchId = response.batchId || this.#batchId;
        yield* response.outcomes;
        // Only once the message's outcomes were all taken: resuming from here repeats none.
        this.#cursor = response.cursor || this.#cursor;
        summary = response.summary ?? summary;
      }
      this.#finished = true;
    } catch (error) {
      this.#finished = true;
      throw toGatewayError(error);
    } finally {
      // Leaving the loop early (break, throw) must not leave the batch running.
      if (!this.#finished) {
        this.#finished = true;
        this.#call.cancel();
      }
    }
    if (summary === null) {
      throw new GatewayError(grpc.status.INTERNAL, 'the server ended the stream without a summary');
    }
    this.#summary = summary;
  }

  /** Read the rest of the stream: `{outcomes, summary}`. */
  async collect() {
    const outcomes = [];
    for await (const outcome of this) {
      outcomes.push(outcome);
    }
    return { outcomes, summary: this.#summary };
  }
}

/**
 * A client of imgate's GatewayService; plaintext unless `credentials`, or `caFile` (the CA
 * of the gateway's certificate) and/or `certFile` + `keyFile` (mTLS) are given. `token`, a
 * caller's bearer token, goes with every call as `authorization: Bearer <token>`.
 */
export class GatewayClient {
  #client;
  #token;

  constructor(target, { credentials, channelOptions, token, caFile, certFile, keyFile } = {}) {
    this.#token = token;
    const channel = channelCredentials(credentials, caFile, certFile, keyFile);
    this.#client = new GatewayService(target, channel, channelOptions);
  }

  /**
   * Send `request.message` to `request.recipientIds`; returns a BatchStream that yields
   * one RecipientOutcome per unique recipient. `timeoutMs` is the deadline of the whole
   * call; `metadata` a grpc Metadata or a plain object of headers.
   */
  batchSend(request, { timeoutMs, metadata } = {}) {
    if (!Array.isArray(request?.recipientIds)) {
      throw new TypeError('request.recipientIds must be an array of ids');
    }
    const call = this.#client.BatchSend(
      request,
      toMetadata(metadata, this.#token),
      callOptions(timeoutMs),
    );
    return new BatchStream(call);
  }

  /** The configured backends with their vendor, effective limits and state. */
  listBackends({ timeoutMs, metadata } = {}) {
    return this.#unary('ListBackends', {}, timeoutMs, metadata);
  }

  /**
   * Store a batch and start sending it (§4 SubmitBatch); resolves to the `Batch` once it is
   * durably stored. `request` is a BatchSendRequest's fields, with `recipientList` (an id
   * from `uploadRecipients`) instead of `recipientIds` for large audiences, and optionally
   * `sendBefore` (a Date: no vendor call starts after it) and `sendAfter` (a Date: none
   * starts before it; the batch waits in state BATCH_STATE_SCHEDULED).
   */
  submitBatch(request, { timeoutMs, metadata } = {}) {
    const { sendBefore, sendAfter, ...fields } = request ?? {};
    const hasIds = Array.isArray(fields.recipientIds) && fields.recipientIds.length > 0;
    if (!hasIds && !fields.recipientList) {
      throw new TypeError('request needs recipientIds (an array) or recipientList');
    }
    if (sendBefore !== undefined) {
      fields.sendBefore = toTimestamp(sendBefore);
    }
    if (sendAfter !== undefined) {
      fields.sendAfter = toTimestamp(sendAfter);
    }
    return this.#unary('SubmitBatch', fields, timeoutMs, metadata);
  }

  /**
   * Stream a recipient list to the gateway in pages (§4 UploadRecipients), without holding it
   * whole: `source` is an array, any (async) iterable of ids, a readable stream of text or
   * `{ path }` of a file with one id per line (blank lines skipped). Resolves to
   * `{recipientList, count, duplicatesRemoved}`; `onProgress(idsSent)` is called per page.
   */
  async uploadRecipients(
    source,
    { pageSize = 10_000, requestId = '', timeoutMs, metadata, onProgress } = {},
  ) {
    if (!Number.isInteger(pageSize) || pageSize < 1) {
      throw new TypeError('pageSize must be a positive integer');
    }
    let settled;
    const answer = new Promise((resolve, reject) => {
      settled = { resolve, reject };
    });
    const call = this.#client.UploadRecipients(
      toMetadata(metadata, this.#token),
      callOptions(timeoutMs),
      (error, response) =>
        error ? settled.reject(toGatewayError(error)) : settled.resolve(response),
    );
    // The server may refuse early (a bad id): stop reading the source then.
    let failed = false;
    answer.catch(() => {
      failed = true;
    });
    let page = [];
    let sent = 0;
    let first = true;
    const flush = async () => {
      const message = { recipientIds: page };
      if (first && requestId) {
        message.requestId = requestId;
      }
      first = false;
      sent += page.length;
      page = [];
      // Back-pressure: wait for the transport to drain before reading more of the source.
      if (!call.write(message)) {
        await Promise.race([once(call, 'drain'), answer.catch(() => {})]);
      }
      onProgress?.(sent);
    };
    try {
      for await (const id of recipientSource(source)) {
        if (failed) {
          break;
        }
        page.push(id);
        if (page.length >= pageSize) {
          await flush();
        }
      }
      if (!failed && (page.length > 0 || first)) {
        await flush();
      }
      call.end();
    } catch (error) {
      call.cancel(); // a source that fails must not leave a half list behind as complete
      throw error;
    }
    return answer;
  }

  /** Every outcome of a batch from `cursor` on (empty: the start), live, then its summary. */
  watchBatch(batchId, { cursor = '', timeoutMs, metadata } = {}) {
    const call = this.#client.WatchBatch(
      { batchId, cursor },
      toMetadata(metadata, this.#token),
      callOptions(timeoutMs),
    );
    return new BatchStream(call, { batchId, cursor });
  }

  /** A batch's state and counts. */
  getBatch(batchId, { timeoutMs, metadata } = {}) {
    return this.#unary('GetBatch', { batchId }, timeoutMs, metadata);
  }

  /** The caller's batches, newest first: `{batches, nextPageToken}`. */
  listBatches({ pageSize = 0, pageToken = '', timeoutMs, metadata } = {}) {
    return this.#unary('ListBatches', { pageSize, pageToken }, timeoutMs, metadata);
  }

  /** Cancel a batch: no new vendor call; unsent recipients end FAILED/NOT_ATTEMPTED. */
  cancelBatch(batchId, { timeoutMs, metadata } = {}) {
    return this.#unary('CancelBatch', { batchId }, timeoutMs, metadata);
  }

  /**
   * Withdraw what a batch delivered (§9 RecallBatch): cancels it if it has not ended, then
   * resolves to its recall batch (`recallOf` = `batchId`; the same one on every call), with
   * one outcome per recipient it delivered to (ACCEPTED = withdrawn); follow it with
   * `watchBatch`. Rejects with code FAILED_PRECONDITION when the backend cannot recall.
   */
  recallBatch(batchId, { requestId = '', timeoutMs, metadata } = {}) {
    return this.#unary('RecallBatch', { batchId, requestId }, timeoutMs, metadata);
  }

  #unary(method, request, timeoutMs, metadata) {
    return new Promise((resolve, reject) => {
      this.#client[method](
        request,
        toMetadata(metadata, this.#token),
        callOptions(timeoutMs),
        (error, response) => (error ? reject(toGatewayError(error)) : resolve(response)),
      );
    });
  }

  /** Close the channel. */
  close() {
    this.#client.close();
  }
}

/** The ids of an upload source, one at a time (see GatewayClient.uploadRecipients). */
async function* recipientSource(source) {
  if (typeof source === 'string') {
    throw new TypeError('pass a file as { path }, or an iterable of ids');
  }
  if (source !== null && typeof source === 'object' && typeof source.path === 'string') {
    source = createReadStream(source.path);
  }
  if (typeof source?.pipe === 'function') {
    // A readable stream of text: one id per line (LF or CRLF), blank lines skipped; any
    // other whitespace stays, for the gateway to refuse (an id is never silently changed).
    for await (const line of createInterface({ input: source, crlfDelay: Infinity })) {
      if (line.trim() !== '') {
        yield line;
      }
    }
    return;
  }
  if (source == null || (!source[Symbol.iterator] && !source[Symbol.asyncIterator])) {
    throw new TypeError('source must be an iterable of ids, a readable stream or { path }');
  }
  for await (const id of source) {
    if (typeof id !== 'string') {
      throw new TypeError('every recipient id must be a string');
    }
    yield id;
  }
}

function toTimestamp(date) {
  if (!(date instanceof Date) || Number.isNaN(date.getTime())) {
    throw new TypeError('sendBefore must be a valid Date');
  }
  const ms = date.getTime();
  const seconds = Math.floor(ms / 1000);
  return { seconds, nanos: (ms - seconds * 1000) * 1e6 };
}

function callOptions(timeoutMs) {
  return timeoutMs === undefined ? {} : { deadline: Date.now() + timeoutMs };
}

function channelCredentials(credentials, caFile, certFile, keyFile) {
  if ((certFile === undefined) !== (keyFile === undefined)) {
    throw new TypeError('certFile and keyFile go together (a client certificate and its key)');
  }
  if (caFile === undefined && certFile === undefined) {
    return credentials ?? grpc.credentials.createInsecure();
  }
  if (credentials !== undefined) {
    throw new TypeError('give either credentials or caFile/certFile/keyFile, not both');
  }
  const read = (path) => (path === undefined ? null : readFileSync(path));
  return grpc.credentials.createSsl(read(caFile), read(keyFile), read(certFile));
}

function toMetadata(metadata, token) {
  let result = metadata;
  if (!(metadata instanceof grpc.Metadata)) {
    result = new grpc.Metadata();
    for (const [key, value] of Object.entries(metadata ?? {})) {
      result.add(key, value);
    }
  } else if (token) {
    result = metadata.clone(); // the caller's object stays as it was
  }
  if (token) {
    result.set('authorization', `Bearer ${token}`);
  }
  return result;
}

function statusName(code) {
  return Object.keys(grpc.status).find((name) => grpc.status[name] === code) ?? String(code);
}

function toGatewayError(error) {
  if (error instanceof GatewayError || typeof error?.code !== 'number') {
    return error;
  }
  const details = error.details ?? error.message;
  if (error.code === grpc.status.INVALID_ARGUMENT) {
    return new InvalidRequestError(error.code, details, error.metadata, fieldViolations(error));
  }
  return new GatewayError(error.code, details, error.metadata);
}

// google.rpc.Status travels in the `grpc-status-details-bin` trailer. Its few fields are
// read here off the protobuf wire format, which spares the package a third dependency.
const BAD_REQUEST_TYPE_URL = 'type.googleapis.com/google.rpc.BadRequest';

function fieldViolations(error) {
  const [status] = error.metadata?.get('grpc-status-details-bin') ?? [];
  if (!(status instanceof Uint8Array)) {
    return [];
  }
  try {
    const violations = [];
    // google.rpc.Status: 3 = repeated google.protobuf.Any details
    for (const detail of lengthDelimited(status, 3)) {
      // google.protobuf.Any: 1 = type_url, 2 = value
      const typeUrl = lengthDelimited(detail, 1).map(utf8).pop();
      if (typeUrl !== BAD_REQUEST_TYPE_URL) {
        continue;
      }
      for (const badRequest of lengthDelimited(detail, 2)) {
        // google.rpc.BadRequest: 1 = repeated FieldViolation {1 = field, 2 = description}
        for (const violation of lengthDelimited(badRequest, 1)) {
          violations.push({
            field: lengthDelimited(violation, 1).map(utf8).pop() ?? '',
            description: lengthDelimited(violation, 2).map(utf8).pop() ?? '',
          });
        }
      }
    }
    return violations;
  } catch {
    // A malformed trailer must not hide the error itself.
    return [];
  }
}

/** The values of every length-delimited field `number` in a protobuf message. */
function lengthDelimited(bytes, number) {
  const values = [];
  let offset = 0;
  while (offset < bytes.length) {
    let key;
    [key, offset] = readVarint(bytes, offset);
    const wireType = key % 8;
    if (wireType === 0) {
      [, offset] = readVarint(bytes, offset);
    } else if (wireType === 1) {
      offset += 8;
    } else if (wireType === 5) {
      offset += 4;
    } else if (wireType === 2) {
      let length;
      [length, offset] = readVarint(bytes, offset);
      if (offset + length > bytes.length) {
        throw new RangeError('truncated protobuf field');
      }
      if (Math.floor(key / 8) === number) {
        values.push(bytes.subarray(offset, offset + length));
      }
      offset += length;
    } else {
      throw new RangeError(`unsupported protobuf wire type ${wireType}`);
    }
  }
  return values;
}

function readVarint(bytes, offset) {
  let value = 0;
  for (let shift = 0; shift < 64; shift += 7) {
    if (offset >= bytes.length) {
      throw new RangeError('truncated protobuf varint');
    }
    const byte = bytes[offset++];
    value += (byte & 0x7f) * 2 ** shift;
    if (byte < 0x80) {
      return [value, offset];
    }
  }
  throw new RangeError('protobuf varint too long');
}

function utf8(bytes) {
  return new TextDecoder().decode(bytes);
}
