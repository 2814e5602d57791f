/**
 * Wire protocol v1 of RxDjango: the shapes of the frames and the constants
 * both ends agree on. This module is the only place where message kinds,
 * operations and codes are spelled; other modules import the names.
 *
 * Two shapes travel server → client: a JSON array (a batch of flat instance
 * records) and a JSON object with a `type` key (a control message).
 * `decodeFrame` turns one text frame into one of those, without throwing.
 */

/** A primary key as the server sends it: int, str or UUID string. */
export type Id = number | string;

/** Values of `_operation` in instance records. */
export const Operation = {
  INITIAL_STATE: 'initial_state',
  CREATE: 'create',
  UPDATE: 'update',
  DELETE: 'delete',
  END_INITIAL_STATE: 'end_initial_state',
} as const;
export type Operation = (typeof Operation)[keyof typeof Operation];

/** Values of `type` in control messages, both directions. */
export const MessageType = {
  AUTH: 'auth',
  INITIAL_ANCHORS: 'initialAnchors',
  PREPEND_ANCHOR: 'prependAnchor',
  APPEND_ANCHOR: 'appendAnchor',
  RESYNC: 'resync',
  ERROR: 'error',
  RUNTIME_VAR: 'runtimeVar',
  SYSTEM: 'system',
  MAINTENANCE: 'maintenance',
  ACTION: 'action',
  ACTION_RESPONSE: 'actionResponse',
  WRITE: 'write',
  WRITE_RESPONSE: 'writeResponse',
} as const;

/** `_instance_type` of records sent with `broadcast_notification`. */
export const NOTIFICATION_TYPE = '_notification';

/** Record keys that describe the record, not the instance. */
export const META_KEYS: ReadonlySet<string> = new Set([
  '_instance_type',
  '_tstamp',
  '_operation',
  '_deleted',
]);

/** HTTP-like status codes used by `auth` replies and error bodies. */
export const StatusCode = {
  OK: 200,
  BAD_REQUEST: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  TIMEOUT: 408,
  SERVER_ERROR: 500,
} as const;

/** WebSocket close codes the server uses: 4000 + the status. */
export const CloseCode = {
  NORMAL: 1000,
  /** The server process is restarting: reconnect at once (another one serves). */
  RESTARTING: 1012,
  BAD_REQUEST: 4400,
  UNAUTHORIZED: 4401,
  FORBIDDEN: 4403,
  NOT_FOUND: 4404,
  TIMEOUT: 4408,
  TOO_MANY_REQUESTS: 4429,
} as const;

/**
 * Codes the client itself puts on rejected requests. They reuse HTTP-like
 * numbers so that one `code` field covers server and client failures.
 */
export const ClientErrorCode = {
  /** The request is invalid before it reaches the server (unknown relation...). */
  BAD_REQUEST: 400,
  /** The type/operation is not declared writable by the channel. */
  NOT_WRITABLE: 403,
  /** No answer within `actionTimeout`. */
  TIMEOUT: 408,
  /** The instance is an optimistic create the server has not confirmed yet. */
  PENDING_CREATE: 409,
  /** The socket closed after the request was sent and before its answer. */
  CONNECTION_LOST: 503,
} as const;

// ---------------------------------------------------------------- server → client

/** One flat instance record (PROTOCOL §3). Reference fields hold pks. */
export interface InstanceRecord {
  id: Id;
  _instance_type: string;
  _tstamp: number;
  _operation: Operation;
  _deleted?: boolean;
  [field: string]: unknown;
}

/** `{code, message}` of every error the server reports. */
export interface ErrorBody {
  code: number;
  message: string;
  /** DRF's validation detail on a refused write, when there is one. */
  detail?: unknown;
}

export interface AuthMessage {
  type: typeof MessageType.AUTH;
  statusCode: number;
  error?: string;
}
export interface InitialAnchorsMessage {
  type: typeof MessageType.INITIAL_ANCHORS;
  anchorIds: Id[];
}
export interface AnchorMessage {
  type: typeof MessageType.PREPEND_ANCHOR | typeof MessageType.APPEND_ANCHOR;
  anchorId: Id;
}
export interface ResyncMessage {
  type: typeof MessageType.RESYNC;
  anchorId: Id;
}
export interface ErrorMessage {
  type: typeof MessageType.ERROR;
  error: ErrorBody;
}
export interface RuntimeVarMessage {
  type: typeof MessageType.RUNTIME_VAR;
  var: string;
  value: unknown;
}
/** `broadcast_system_message` output, or a maintenance announcement. */
export interface SystemMessage {
  type: typeof MessageType.SYSTEM | typeof MessageType.MAINTENANCE;
  source: string;
  message: unknown;
}
export interface ActionResponseMessage {
  type: typeof MessageType.ACTION_RESPONSE;
  callId: number;
  result?: unknown;
  error?: ErrorBody;
}
export interface WriteResponseMessage {
  type: typeof MessageType.WRITE_RESPONSE;
  writeId: number;
  success: boolean;
  instanceId?: Id;
  error?: ErrorBody;
}

export type ControlMessage =
  | AuthMessage
  | InitialAnchorsMessage
  | AnchorMessage
  | ResyncMessage
  | ErrorMessage
  | RuntimeVarMessage
  | SystemMessage
  | ActionResponseMessage
  | WriteResponseMessage;

/** A notification record: `_instance_type` is `_notification`, other keys are the sender's. */
export type NotificationRecord = Record<string, unknown>;

/** What one text frame decodes to. */
export type DecodedFrame =
  | { kind: 'records'; records: InstanceRecord[] }
  | { kind: 'control'; message: ControlMessage }
  /** A JSON object that is not a known message: a channel's own `send(...)`. */
  | { kind: 'custom'; message: Record<string, unknown> }
  | { kind: 'invalid'; reason: string };

// ---------------------------------------------------------------- client → server

export interface AuthFrame {
  /** A DRF token or another authenticator's credential; null: the session cookie (or none). */
  token: string | null;
  lastUpdate: number | null;
}
export interface ActionFrame {
  type: typeof MessageType.ACTION;
  callId: number;
  action: string;
  params: unknown[];
}
export type WriteFrame =
  | {
      type: typeof MessageType.WRITE;
      writeId: number;
      operation: 'save';
      instanceType: string;
      instanceId: Id;
      data: Record<string, unknown>;
    }
  | {
      type: typeof MessageType.WRITE;
      writeId: number;
      operation: 'create';
      instanceType: string;
      parentType: string;
      parentId: Id;
      relationName: string;
      data: Record<string, unknown>;
    }
  | {
      type: typeof MessageType.WRITE;
      writeId: number;
      operation: 'delete';
      instanceType: string;
      instanceId: Id;
    };

export type ClientFrame = AuthFrame | ActionFrame | WriteFrame;

// ---------------------------------------------------------------- decoding

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function isId(value: unknown): value is Id {
  return typeof value === 'number' || typeof value === 'string';
}

function isErrorBody(value: unknown): value is ErrorBody {
  return isObject(value) && typeof value.code === 'number' && typeof value.message === 'string';
}

/** An instance record, or a notification record (which carries only the sender's keys). */
function isRecord(value: unknown): value is InstanceRecord {
  return (
    isObject(value) &&
    typeof value._instance_type === 'string' &&
    (typeof value._operation === 'string' || value._instance_type === NOTIFICATION_TYPE)
  );
}

/** Field checks per known message type; a known type that fails them is invalid. */
const CONTROL_CHECKS: Record<string, (m: Record<string, unknown>) => boolean> = {
  [MessageType.AUTH]: (m) => typeof m.statusCode === 'number',
  [MessageType.INITIAL_ANCHORS]: (m) => Array.isArray(m.anchorIds) && m.anchorIds.every(isId),
  [MessageType.PREPEND_ANCHOR]: (m) => isId(m.anchorId),
  [MessageType.APPEND_ANCHOR]: (m) => isId(m.anchorId),
  [MessageType.RESYNC]: (m) => isId(m.anchorId),
  [MessageType.ERROR]: (m) => isErrorBody(m.error),
  [MessageType.RUNTIME_VAR]: (m) => typeof m.var === 'string',
  [MessageType.SYSTEM]: () => true,
  [MessageType.MAINTENANCE]: () => true,
  [MessageType.ACTION_RESPONSE]: (m) =>
    typeof m.callId === 'number' && (m.error === undefined || isErrorBody(m.error)),
  [MessageType.WRITE_RESPONSE]: (m) =>
    typeof m.writeId === 'number' &&
    typeof m.success === 'boolean' &&
    (m.error === undefined || isErrorBody(m.error)),
};

/**
 * Decode one server frame. Never throws: a frame that is not JSON, or a
 * known message missing its fields, comes back as `invalid` so that one
 * bad frame cannot break the connection. Array elements that are not
 * records are dropped (and make the frame invalid only if none is left and
 * some were present).
 */
export function decodeFrame(data: unknown): DecodedFrame {
  if (typeof data !== 'string') {
    return { kind: 'invalid', reason: `expected a text frame, got ${typeof data}` };
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(data);
  } catch {
    return { kind: 'invalid', reason: 'frame is not valid JSON' };
  }
  if (Array.isArray(parsed)) {
    const records = parsed.filter(isRecord);
    if (records.length === 0 && parsed.length > 0) {
      return { kind: 'invalid', reason: 'array frame holds no instance record' };
    }
    return { kind: 'records', records };
  }
  if (!isObject(parsed)) {
    return { kind: 'invalid', reason: 'expected a JSON array or object' };
  }
  const type = parsed.type;
  const check = typeof type === 'string' ? CONTROL_CHECKS[type] : undefined;
  if (check === undefined) {
    return { kind: 'custom', message: parsed };
  }
  if (!check(parsed)) {
    return { kind: 'invalid', reason: `malformed "${String(type)}" message` };
  }
  // The per-type check above established the fields this cast promises.
  return { kind: 'control', message: parsed as unknown as ControlMessage };
}

/** Encode one client frame. */
export function encodeFrame(frame: ClientFrame): string {
  return JSON.stringify(frame);
}
