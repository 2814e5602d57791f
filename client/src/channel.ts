/**
 * `ContextChannel`: the base class of the generated channels. It ties a
 * connection, a state builder, the request tracker and the write manager
 * together, and publishes one immutable snapshot to subscribers.
 *
 * The generated subclass declares the schema as static members (read here
 * through `this.constructor`) and passes the route arguments and the token
 * to `super`. Constructing a channel does nothing else: the socket opens
 * with the first subscriber (or `connect()`) and closes `closeDelay` ms
 * after the last one leaves, so an unmount immediately followed by a mount
 * (React StrictMode, route changes) keeps the same socket.
 */

import { DEFAULT_RECONNECT, type ReconnectOptions } from './backoff';
import { Connection, TERMINAL_STATUSES, type ConnectionStatus, type WebSocketConstructor } from './connection';
import { Emitter } from './emitter';
import { ActionError, ConfigurationError, type ConnectionError } from './errors';
import { WriteManager } from './optimistic';
import {
  ClientErrorCode,
  MessageType,
  type ActionResponseMessage,
  type ControlMessage,
  type DecodedFrame,
  type ErrorBody,
  type Id,
  type NotificationRecord,
  type SystemMessage,
} from './protocol';
import { RequestTracker, type Outcome } from './requests';
import { StateBuilder, type Decorator } from './stateBuilder';
import type { ChannelState, StateModel, WritableMap, WriteOperation } from './types';
import { fillEndpoint, joinURL, resolveBaseURL, type EndpointArgs } from './url';

export interface ChannelOptions {
  /** Base of the socket URL, e.g. `"ws://127.0.0.1:8000/"`. Overrides the class's `baseURL`; default: the page's origin. */
  baseURL?: string;
  /** WebSocket implementation; default `globalThis.WebSocket`. In Node < 22 pass the `ws` package. */
  WebSocket?: WebSocketConstructor;
  /** Reject an action or write without answer after this many ms. Default 30000. */
  actionTimeout?: number;
  /** Reconnect backoff. Defaults: initialDelay 500, maxDelay 30000, jitter 0.5. */
  reconnect?: Partial<ReconnectOptions>;
  /** Keep the socket this many ms after the last subscriber leaves. Default 250. */
  closeDelay?: number;
  /** How many notifications the snapshot keeps (newest last). Default 50. */
  maxNotifications?: number;
  /** Random source for the backoff jitter, [0, 1). Default `Math.random`. */
  random?: () => number;
}

/** What subscribers read. A new object whenever any field changes, else the same one. */
export interface ChannelSnapshot<S, R> {
  readonly state: S;
  readonly connectionStatus: ConnectionStatus;
  readonly runtimeState: R;
  /** Why the status is terminal (`unauthorized`, `forbidden`, `not-found`, `error`), else null. */
  readonly error: ConnectionError | null;
  /** A complete state has been received at least once. */
  readonly ready: boolean;
  /** The last `system` or `maintenance` message. */
  readonly lastSystemMessage: SystemMessage | null;
  /** The latest `_notification` records, oldest first. */
  readonly notifications: readonly NotificationRecord[];
  /** `connectionStatus === 'connected'`: authenticated and live. Name of the original RxDjango client. */
  readonly connected: boolean;
  /**
   * When the connection was lost: set the moment a connected socket goes
   * (any cause, a close by the client included), kept through the retries,
   * cleared on the next `connected`. Undefined before the first connection.
   */
  readonly noConnectionSince: Date | undefined;
  /** Same value as `noConnectionSince`, spelled as in the original RxDjango client. */
  readonly no_connection_since: Date | undefined;
  /** A list channel whose complete state has no anchor (ready, zero items). Always false for a single channel. */
  readonly empty: boolean;
}

export interface ChannelEvents {
  notification: NotificationRecord;
  /** `system` and `maintenance` messages. */
  system: SystemMessage;
  /** `{"type":"error"}` frames, and frames the client could not decode (code 400). */
  serverError: ErrorBody;
  /** Frames outside the protocol, e.g. sent by the channel's own `send(...)`. */
  message: Record<string, unknown>;
  status: ConnectionStatus;
}

/** The static members a generated channel class declares. */
export interface ChannelStatics {
  /** Route template; `{name}` is replaced by the constructor's argument `name`. */
  readonly endpoint: string;
  /** `_instance_type` of the anchors. */
  readonly anchorType: string;
  /** List channel: the state is the anchors in order. Default false. */
  readonly many?: boolean;
  /** Reference fields of each instance type. */
  readonly model: StateModel;
  /** Operations allowed per instance type. Default: none. */
  readonly writable?: WritableMap;
  /** Runtime variables before the server sets them. Default `{}`. */
  readonly runtimeDefaults?: object;
  /** Base URL emitted by the generator; '' means options.baseURL or the page's origin. */
  readonly baseURL?: string;
}

type ChannelClass = ChannelStatics & { readonly name: string };

const DEFAULT_ACTION_TIMEOUT = 30_000;
const DEFAULT_CLOSE_DELAY = 250;
const DEFAULT_MAX_NOTIFICATIONS = 50;

function defineHidden(target: object, name: string, value: unknown): void {
  Object.defineProperty(target, name, { value, enumerable: false, configurable: true, writable: false });
}

/**
 * Base of the generated channel classes. The subclass declares the schema
 * as static members (`ChannelStatics`); the base class does not declare
 * them itself, so that generated code compiles under `noImplicitOverride`.
 * `T` is the anchor's interface (`JobType`), or an array of it for a
 * `many` channel (`JobType[]`); `R` is the runtime-state interface.
 */
export abstract class ContextChannel<T, R = Record<string, unknown>> {
  /** The socket path, arguments filled in. */
  readonly path: string;

  readonly #options: ChannelOptions;
  readonly #builder: StateBuilder;
  readonly #tracker: RequestTracker;
  readonly #writes: WriteManager;
  readonly #connection: Connection;
  readonly #events = new Emitter<ChannelEvents>();
  readonly #listeners = new Set<{ readonly listener: () => void }>();
  #runtime: Record<string, unknown>;
  #notificationList: readonly NotificationRecord[] = [];
  #systemMessage: SystemMessage | null = null;
  #everConnected = false;
  #noConnectionSince: Date | undefined = undefined;
  #snapshot: ChannelSnapshot<ChannelState<T>, R>;
  #holders = 0;
  #held = false;
  #closeTimer: ReturnType<typeof setTimeout> | undefined;
  #callSeq = 0;

  protected constructor(args: EndpointArgs, token: string | null, options: ChannelOptions = {}) {
    const cls = this.constructor as unknown as ChannelClass;
    for (const name of ['endpoint', 'anchorType'] as const) {
      if (typeof cls[name] !== 'string' || cls[name] === '') {
        throw new ConfigurationError(`${cls.name} must declare a non-empty static ${name}`);
      }
    }
    if (typeof cls.model !== 'object' || cls.model === null) {
      throw new ConfigurationError(`${cls.name} must declare a static model (StateModel)`);
    }
    const writable = cls.writable ?? {};
    this.#options = options;
    this.path = fillEndpoint(cls.endpoint, args);
    this.#runtime = { ...(cls.runtimeDefaults ?? {}) };
    this.#builder = new StateBuilder(
      { anchorType: cls.anchorType, many: cls.many === true, model: cls.model },
      this.#decorator(writable),
    );
    this.#tracker = new RequestTracker(
      { trySend: (frame) => this.#connection.send(frame) },
      options.actionTimeout ?? DEFAULT_ACTION_TIMEOUT,
    );
    this.#writes = new WriteManager({
      builder: this.#builder,
      tracker: this.#tracker,
      model: cls.model,
      writable,
      changed: () => this.#publish(),
    });
    this.#connection = new Connection(
      {
        url: () => this.url,
        token,
        lastUpdate: () => this.#builder.lastUpdate,
        WebSocket: options.WebSocket,
        reconnect: { ...DEFAULT_RECONNECT, ...options.reconnect },
        ...(options.random ? { random: options.random } : {}),
      },
      {
        authenticated: () => this.#tracker.flush(),
        frame: (frame) => this.#receive(frame),
        disconnected: () =>
          this.#tracker.failSent(
            new ActionError(ClientErrorCode.CONNECTION_LOST, 'the connection closed before the server answered'),
          ),
        statusChanged: (status, error) => this.#statusChanged(status, error),
      },
    );
    this.#snapshot = this.#makeSnapshot();
  }

  // ------------------------------------------------------------ reading

  /** The full socket URL (resolved now: options.baseURL, class baseURL, page origin). */
  get url(): string {
    const cls = this.constructor as unknown as ChannelClass;
    return joinURL(resolveBaseURL(this.#options.baseURL, cls.baseURL), this.path);
  }

  getSnapshot(): ChannelSnapshot<ChannelState<T>, R> {
    return this.#snapshot;
  }

  get state(): ChannelState<T> {
    return this.#snapshot.state;
  }

  get status(): ConnectionStatus {
    return this.#snapshot.connectionStatus;
  }

  get runtimeState(): R {
    return this.#snapshot.runtimeState;
  }

  /** Highest `_tstamp` of a complete state, sent as `lastUpdate` on reconnect. */
  get lastUpdate(): number | null {
    return this.#builder.lastUpdate;
  }

  /** One instance with its references resolved, or undefined. Stable identity while unchanged. */
  getInstance<I = Record<string, unknown>>(instanceType: string, id: Id): I | undefined {
    // Built objects have the fields of the generated interface `I`; the
    // caller names it, the server's schema guarantees it.
    return this.#builder.getInstance(instanceType, id) as I | undefined;
  }

  /** Listen to `notification`, `system`, `serverError`, `message` or `status`. Returns the remover. */
  on<K extends keyof ChannelEvents>(event: K, listener: (payload: ChannelEvents[K]) => void): () => void {
    return this.#events.on(event, listener);
  }

  // ------------------------------------------------------------ lifetime

  /**
   * Be told when the snapshot changes. The first subscriber opens the
   * socket; `closeDelay` ms after the last one leaves it closes, unless a
   * subscriber came back meanwhile. Each call returns its own remover.
   */
  subscribe(listener: () => void): () => void {
    const entry = { listener };
    this.#listeners.add(entry);
    this.#retain();
    let active = true;
    return () => {
      if (!active) return;
      active = false;
      this.#listeners.delete(entry);
      this.#release(false);
    };
  }

  /** Keep the socket open without a subscriber (non-React use). Idempotent. */
  connect(): void {
    if (this.#held) return;
    this.#held = true;
    this.#retain();
  }

  /** Undo `connect()`; the socket closes at once if nothing else subscribes. */
  disconnect(): void {
    if (!this.#held) return;
    this.#held = false;
    this.#release(true);
  }

  /**
   * Connect again now: after `unauthorized` and the like, or to skip a
   * backoff wait. Without subscribers it only clears a terminal status, so
   * that the next subscriber connects.
   */
  reconnect(): void {
    if (this.#holders > 0) this.#connection.retry();
    else this.#connection.reset();
  }

  // ------------------------------------------------------------ requests

  /**
   * Call an `@action` method of the server channel. Calls made before the
   * socket is authenticated are sent after auth, in order. Rejects with
   * `ActionError`: the server's `{code, message}`, 408 after
   * `actionTimeout`, 503 when the connection drops before the answer (the
   * call is not re-sent: it may have run).
   */
  callAction<Result = unknown>(action: string, params: readonly unknown[] = []): Promise<Result> {
    const error = this.#connection.error;
    if (error !== null && TERMINAL_STATUSES.has(this.#connection.status)) {
      return Promise.reject(new ActionError(error.code, error.message));
    }
    const callId = ++this.#callSeq;
    return this.#tracker.start<Result>(`action:${callId}`, {
      type: MessageType.ACTION,
      callId,
      action,
      params: [...params],
    });
  }

  /** Optimistic partial update of one instance; see PROTOCOL §5. Rejects with `WriteError` after rolling back. */
  save(instanceType: string, id: Id, data: Readonly<Record<string, unknown>>): Promise<void> {
    return this.#writes.save(instanceType, id, data);
  }

  /** Optimistic delete; a refusal puts the instance back where it was in every list. */
  delete(instanceType: string, id: Id): Promise<void> {
    return this.#writes.delete(instanceType, id);
  }

  /** Optimistic create in `parent[relationName]`; resolves with the new pk. */
  create(
    parentType: string,
    parentId: Id,
    relationName: string,
    data: Readonly<Record<string, unknown>>,
  ): Promise<Id | undefined> {
    return this.#writes.create(parentType, parentId, relationName, data);
  }

  // ------------------------------------------------------------ internals

  #retain(): void {
    this.#holders += 1;
    if (this.#closeTimer !== undefined) {
      clearTimeout(this.#closeTimer);
      this.#closeTimer = undefined;
    }
    this.#connection.open();
  }

  #release(immediate: boolean): void {
    this.#holders -= 1;
    if (this.#holders > 0) return;
    if (this.#closeTimer !== undefined) clearTimeout(this.#closeTimer);
    this.#closeTimer = undefined;
    if (immediate) {
      this.#connection.close();
      return;
    }
    this.#closeTimer = setTimeout(() => {
      this.#closeTimer = undefined;
      if (this.#holders === 0) this.#connection.close();
    }, this.#options.closeDelay ?? DEFAULT_CLOSE_DELAY);
  }

  #decorator(writable: WritableMap): Decorator {
    const allows = (type: string, op: WriteOperation): boolean => writable[type]?.includes(op) ?? false;
    return {
      instance: (target, type, id) => {
        if (allows(type, 'save')) {
          defineHidden(target, 'save', (data: Readonly<Record<string, unknown>>) => this.save(type, id, data));
        }
        if (allows(type, 'delete')) defineHidden(target, 'delete', () => this.delete(type, id));
      },
      list: (target, parentType, parentId, relationName, childType) => {
        if (!allows(childType, 'create')) return;
        defineHidden(target, 'create', (data: Readonly<Record<string, unknown>>) =>
          this.create(parentType, parentId, relationName, data),
        );
      },
    };
  }

  #receive(frame: DecodedFrame): void {
    switch (frame.kind) {
      case 'records': {
        const result = this.#builder.applyRecords(frame.records);
        if (result.notifications.length > 0) {
          const max = this.#options.maxNotifications ?? DEFAULT_MAX_NOTIFICATIONS;
          this.#notificationList = [...this.#notificationList, ...result.notifications].slice(-max);
          for (const notification of result.notifications) this.#events.emit('notification', notification);
        }
        // During a (re)load the published state stays the previous complete one.
        if (!this.#builder.loading || result.notifications.length > 0) this.#publish();
        return;
      }
      case 'control':
        this.#control(frame.message);
        return;
      case 'custom':
        this.#events.emit('message', frame.message);
        return;
      case 'invalid':
        this.#events.emit('serverError', { code: ClientErrorCode.BAD_REQUEST, message: frame.reason });
        return;
    }
  }

  #control(message: ControlMessage): void {
    switch (message.type) {
      case MessageType.INITIAL_ANCHORS:
        if (this.#builder.beginLoad(message.anchorIds)) this.#publish();
        return;
      case MessageType.RESYNC:
        this.#builder.resync(message.anchorId);
        return;
      case MessageType.PREPEND_ANCHOR:
        this.#builder.prependAnchor(message.anchorId);
        this.#publish();
        return;
      case MessageType.APPEND_ANCHOR:
        this.#builder.appendAnchor(message.anchorId);
        this.#publish();
        return;
      case MessageType.RUNTIME_VAR:
        this.#runtime = { ...this.#runtime, [message.var]: message.value };
        this.#publish();
        return;
      case MessageType.SYSTEM:
      case MessageType.MAINTENANCE:
        // A maintenance message also makes the connection reconnect (connection.ts).
        this.#systemMessage = message;
        this.#events.emit('system', message);
        this.#publish();
        return;
      case MessageType.ERROR:
        this.#events.emit('serverError', message.error);
        return;
      case MessageType.ACTION_RESPONSE:
        this.#tracker.settle(`action:${message.callId}`, this.#actionOutcome(message));
        return;
      case MessageType.WRITE_RESPONSE:
        this.#writes.handleResponse(message);
        return;
      case MessageType.AUTH:
        return; // handled by the connection
    }
  }

  #actionOutcome(message: ActionResponseMessage): Outcome<unknown> {
    if (message.error !== undefined) {
      return { ok: false, error: new ActionError(message.error.code, message.error.message, message.error.detail) };
    }
    return { ok: true, value: 'result' in message ? message.result : null };
  }

  #statusChanged(status: ConnectionStatus, error: ConnectionError | null): void {
    if (TERMINAL_STATUSES.has(status)) {
      const code = error?.code ?? 0;
      this.#tracker.failAll(new ActionError(code, error?.message ?? `connection ${status}`));
    }
    if (status === 'connected') {
      this.#everConnected = true;
      this.#noConnectionSince = undefined;
    } else if (this.#everConnected && this.#noConnectionSince === undefined) {
      // The first status after `connected`: the moment the connection went.
      this.#noConnectionSince = new Date();
    }
    this.#events.emit('status', status);
    this.#publish();
  }

  #makeSnapshot(): ChannelSnapshot<ChannelState<T>, R> {
    const previous = this.#snapshot as ChannelSnapshot<ChannelState<T>, R> | undefined;
    // The builder's state has the shape `ChannelState<T>` by construction of
    // the schema; `R` is the generated runtime-state interface, filled from
    // `runtimeDefaults` and the server's `runtimeVar` messages.
    const state = (
      this.#builder.loading && previous !== undefined ? previous.state : this.#builder.getState()
    ) as ChannelState<T>;
    const connectionStatus = this.#connection.status;
    const ready = this.#builder.ready;
    const many = (this.constructor as unknown as ChannelClass).many === true;
    return {
      state,
      connectionStatus,
      runtimeState: this.#runtime as R,
      error: this.#connection.error,
      ready,
      lastSystemMessage: this.#systemMessage,
      notifications: this.#notificationList,
      connected: connectionStatus === 'connected',
      noConnectionSince: this.#noConnectionSince,
      no_connection_since: this.#noConnectionSince,
      empty: many && ready && Array.isArray(state) && state.length === 0,
    };
  }

  /** Replace the snapshot if anything changed and tell the subscribers. */
  #publish(): void {
    const next = this.#makeSnapshot();
    const current = this.#snapshot;
    const same = (Object.keys(next) as (keyof typeof next)[]).every((key) => next[key] === current[key]);
    if (same) return;
    this.#snapshot = next;
    for (const { listener } of [...this.#listeners]) listener();
  }
}
