// Public API of @imgate/client. Field names are lowerCamelCase (proto-loader keepCase:
// false), enums are their full names, 64-bit integers are Numbers.
import type { ChannelCredentials, ChannelOptions, Metadata } from '@grpc/grpc-js';
import type { PackageDefinition } from '@grpc/proto-loader';

export { credentials, Metadata, status } from '@grpc/grpc-js';

/** The @grpc/proto-loader options the client loads the API with. */
export declare const LOADER_OPTIONS: Readonly<{
  keepCase: false;
  longs: NumberConstructor;
  enums: StringConstructor;
  defaults: true;
  oneofs: true;
}>;

/** imgate/v1/gateway.proto loaded with LOADER_OPTIONS. */
export declare const packageDefinition: PackageDefinition;

/** A value added to the API after this package was built arrives as its number. */
type OpenEnum<Names extends string> = Names | number;

export type DeliveryState = OpenEnum<
  | 'DELIVERY_STATE_UNSPECIFIED'
  | 'DELIVERY_STATE_ACCEPTED'
  | 'DELIVERY_STATE_FAILED'
  | 'DELIVERY_STATE_UNCERTAIN'
>;

export type FailureReason = OpenEnum<
  | 'FAILURE_REASON_UNSPECIFIED'
  | 'FAILURE_REASON_RECIPIENT_NOT_FOUND'
  | 'FAILURE_REASON_RECIPIENT_INVALID'
  | 'FAILURE_REASON_SENDER_BANNED'
  | 'FAILURE_REASON_SENDER_MUTED'
  | 'FAILURE_REASON_CONTENT_REJECTED'
  | 'FAILURE_REASON_MESSAGE_INVALID'
  | 'FAILURE_REASON_RATE_LIMITED'
  | 'FAILURE_REASON_AUTH_FAILED'
  | 'FAILURE_REASON_VENDOR_ERROR'
  | 'FAILURE_REASON_VENDOR_UNAVAILABLE'
  | 'FAILURE_REASON_TIMEOUT'
  | 'FAILURE_REASON_NOT_ATTEMPTED'
  | 'FAILURE_REASON_SENDER_NOT_FOUND'
  | 'FAILURE_REASON_NOT_RECALLABLE'
>;

export type BackendState = OpenEnum<
  | 'BACKEND_STATE_UNSPECIFIED'
  | 'BACKEND_STATE_SERVING'
  | 'BACKEND_STATE_BLOCKED'
  | 'BACKEND_STATE_PAUSED'
>;

export interface TextContent {
  text: string;
}

export interface TipContent {
  text: string;
}

export interface ImageContent {
  url: string;
  md5?: string;
  name?: string;
  format?: string;
  sizeBytes?: number;
  width?: number;
  height?: number;
}

export interface AudioContent {
  url: string;
  md5?: string;
  format?: string;
  sizeBytes?: number;
  durationMs?: number;
}

export interface VideoContent {
  url: string;
  md5?: string;
  format?: string;
  sizeBytes?: number;
  width?: number;
  height?: number;
  durationMs?: number;
}

export interface LocationContent {
  title?: string;
  latitude: number;
  longitude: number;
}

export interface FileContent {
  url: string;
  md5?: string;
  name?: string;
  format?: string;
  sizeBytes?: number;
}

export interface CustomContent {
  /** JSON text. */
  data: string;
  subType?: number;
  description?: string;
}

type ContentKinds = {
  text: TextContent;
  image: ImageContent;
  audio: AudioContent;
  video: VideoContent;
  location: LocationContent;
  file: FileContent;
  tip: TipContent;
  custom: CustomContent;
};

/** Exactly one kind of content, e.g. `{ text: { text: 'hi' } }`. */
export type Message = {
  [Kind in keyof ContentKinds]: { [K in Kind]: ContentKinds[K] } & {
    [Other in Exclude<keyof ContentKinds, Kind>]?: never;
  };
}[keyof ContentKinds] & {
  /** A JSON object as text (Yunxin ext/extension, Tencent CloudCustomData). */
  extension?: string;
};

/** Delivery options; an absent field keeps the vendor's default. */
export interface SendOptions {
  pushEnabled?: boolean;
  pushContent?: string;
  pushTitle?: string;
  /** A JSON object as text. */
  pushPayload?: string;
  offlineEnabled?: boolean;
  historyEnabled?: boolean;
  unreadEnabled?: boolean;
  syncToSender?: boolean;
  updateConversation?: boolean;
  skipModeration?: boolean;
  onlineOnly?: boolean;
  readReceipt?: boolean;
  returnMessageIds?: boolean;
}

export interface BatchSendRequest {
  recipientIds: string[];
  message: Message;
  /** Empty selects the server's default backend. */
  backend?: string;
  senderId?: string;
  /** Idempotency key: the same id and payload are never sent twice. */
  requestId?: string;
  options?: SendOptions;
}

export interface RecipientOutcome {
  recipientId: string;
  /** Position of the recipient's first occurrence in recipientIds. */
  index: number;
  state: DeliveryState;
  reason: FailureReason;
  vendorCode: string;
  detail: string;
  vendorMessageId: string;
  attempts: number;
}

export interface BatchSummary {
  total: number;
  accepted: number;
  failed: number;
  uncertain: number;
  duplicatesRemoved: number;
  vendorCalls: number;
  elapsedMs: number;
}

export interface BackendLimits {
  recipientsPerCall: number;
  callLimit: number;
  callWindowS: number;
  recipientLimit: number;
  recipientWindowS: number;
  blockS: number;
  maxInFlight: number;
  requestTimeoutS: number;
  maxAttempts: number;
}

export interface Backend {
  name: string;
  vendor: string;
  limits: BackendLimits | null;
  state: BackendState;
  /** Set when state is BACKEND_STATE_BLOCKED. */
  blockedUntil: { seconds: number; nanos: number } | null;
  sandbox: boolean;
  /** Set when state is BACKEND_STATE_PAUSED and the end is known. */
  pausedUntil: { seconds: number; nanos: number } | null;
  /** Why the backend is not sending (BACKEND_STATE_PAUSED or BACKEND_STATE_BLOCKED). */
  pauseReason: string;
  /** Whether recallBatch can recall this backend's batches. */
  recallable: boolean;
}

export interface ListBackendsResponse {
  backends: Backend[];
  defaultBackend: string;
}

export interface CallOptions {
  /** Deadline of the whole call, in milliseconds from now. */
  timeoutMs?: number;
  metadata?: Metadata | Record<string, string | Buffer>;
}

export interface ClientOptions {
  /** Default: plaintext (credentials.createInsecure()), or TLS with the files below. */
  credentials?: ChannelCredentials;
  channelOptions?: ChannelOptions;
  /** A caller's bearer token, sent as `authorization: Bearer <token>` on every call. */
  token?: string;
  /** PEM CA that signed the gateway's certificate: TLS (default roots: the system's). */
  caFile?: string;
  /** PEM client certificate for mTLS, with keyFile. */
  certFile?: string;
  /** PEM private key of certFile. */
  keyFile?: string;
}

/** The RPC failed; `code` is the gRPC status code (see `status`). */
export declare class GatewayError extends Error {
  readonly code: number;
  readonly details: string;
  readonly metadata: Metadata | undefined;
}

export interface FieldViolation {
  field: string;
  description: string;
}

/** INVALID_ARGUMENT: the request was refused as a whole and nothing was sent. */
export declare class InvalidRequestError extends GatewayError {
  readonly violations: FieldViolation[];
}

/** The outcomes of one BatchSend or WatchBatch call; iterable once. */
export declare class BatchStream implements AsyncIterable<RecipientOutcome> {
  /** The summary once every outcome has been iterated; null before. */
  readonly summary: BatchSummary | null;
  /** The batch's id ('' until a BatchSend stream's first message). */
  readonly batchId: string;
  /** Resume point: watchBatch(batchId, { cursor }) repeats none of the outcomes yielded. */
  readonly cursor: string;
  /** Whether the call has ended (exhausted, failed or cancelled). */
  readonly finished: boolean;
  /** Cancel the call: the gateway starts no new vendor call for it. */
  cancel(): void;
  /** Iteration throws GatewayError (or InvalidRequestError) when the call fails. */
  [Symbol.asyncIterator](): AsyncGenerator<RecipientOutcome, void, undefined>;
  /** Read the rest of the stream. */
  collect(): Promise<{ outcomes: RecipientOutcome[]; summary: BatchSummary }>;
}

export type Timestamp = { seconds: number; nanos: number };

export type BatchState = OpenEnum<
  | 'BATCH_STATE_UNSPECIFIED'
  | 'BATCH_STATE_QUEUED'
  | 'BATCH_STATE_RUNNING'
  | 'BATCH_STATE_DONE'
  | 'BATCH_STATE_CANCELLING'
  | 'BATCH_STATE_CANCELLED'
  | 'BATCH_STATE_SCHEDULED'
>;

export interface SubmitBatchRequest extends Omit<BatchSendRequest, 'recipientIds'> {
  recipientIds?: string[];
  /** An id from uploadRecipients, instead of recipientIds. */
  recipientList?: string;
  /** No vendor call starts after this; unsent recipients end FAILED/NOT_ATTEMPTED. */
  sendBefore?: Date;
  /** No vendor call starts before this: the batch waits BATCH_STATE_SCHEDULED. */
  sendAfter?: Date;
}

export interface Batch {
  batchId: string;
  requestId: string;
  backend: string;
  state: BatchState;
  total: number;
  accepted: number;
  failed: number;
  uncertain: number;
  pending: number;
  createTime: Timestamp | null;
  updateTime: Timestamp | null;
  /** Set once the batch has ended. */
  summary: BatchSummary | null;
  /** A recall batch: the batch whose messages it withdraws ('' otherwise). */
  recallOf: string;
  /** The recall batch of this batch, once there is one ('' before). */
  recalledBy: string;
  /** When it may start sending, if submitted with sendAfter. */
  sendAfter: Timestamp | null;
}

export interface ListBatchesResponse {
  batches: Batch[];
  nextPageToken: string;
}

export interface RecipientList {
  recipientList: string;
  /** Unique ids stored. */
  count: number;
  duplicatesRemoved: number;
}

export interface UploadOptions extends CallOptions {
  /** Ids per UploadRecipients message (default 10,000). */
  pageSize?: number;
  requestId?: string;
  /** Called after each page with the number of ids sent so far. */
  onProgress?: (idsSent: number) => void;
}

export type RecipientSource =
  | Iterable<string>
  | AsyncIterable<string>
  /** A readable stream of text (one id per line), e.g. process.stdin. */
  | { pipe(destination: never): unknown }
  | { path: string };

export declare class GatewayClient {
  constructor(target: string, options?: ClientOptions);
  batchSend(request: BatchSendRequest, options?: CallOptions): BatchStream;
  listBackends(options?: CallOptions): Promise<ListBackendsResponse>;
  submitBatch(request: SubmitBatchRequest, options?: CallOptions): Promise<Batch>;
  /** Streams `source` in pages without holding it whole; a file has one id per line. */
  uploadRecipients(source: RecipientSource, options?: UploadOptions): Promise<RecipientList>;
  watchBatch(batchId: string, options?: CallOptions & { cursor?: string }): BatchStream;
  getBatch(batchId: string, options?: CallOptions): Promise<Batch>;
  listBatches(
    options?: CallOptions & { pageSize?: number; pageToken?: string },
  ): Promise<ListBatchesResponse>;
  cancelBatch(batchId: string, options?: CallOptions): Promise<Batch>;
  /** The batch's recall batch (cancels the batch first if it has not ended). */
  recallBatch(batchId: string, options?: CallOptions & { requestId?: string }): Promise<Batch>;
  close(): void;
}
