// @imgate/client: Node.js client of the imgate gateway (imgate.v1.GatewayService).
//
// Messages are plain objects shaped by @grpc/proto-loader with these options, so field
// names are lowerCamelCase (keepCase: false: `recipientIds`, `vendorMessageId`), enums are
// their full names as strings ('DELIVERY_STATE_ACCEPTED'), 64-bit integers are Numbers,
// and every field is present in what the server sends (unset messages are null).
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
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

/** The outcomes of one BatchSend call: iterate with `for await`, then read `summary`. */
export class BatchStream {
  #call;
  #summary = null;
  #finished = false;
  #iterated = false;

  constructor(call) {
    this.#call = call;
    // Without a listener, the CANCELLED status that follows cancel() would be an
    // unhandled 'error' event; failures still reach the iterator through its own listener.
    call.on('error', () => {});
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
        yield* response.outcomes;
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
    const call = this.#client.BatchSend(request, toMetadata(metadata, this.#token), callOptions(timeoutMs));
    return new BatchStream(call);
  }

  /** The configured backends with their vendor, effective limits and state. */
  listBackends({ timeoutMs, metadata } = {}) {
    return new Promise((resolve, reject) => {
      this.#client.ListBackends(
        {},
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
