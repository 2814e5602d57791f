/**
 * One persistent, authenticated socket to one channel URL.
 *
 * Lifecycle (`ConnectionStatus`, transitions guarded by `TRANSITIONS`):
 *
 *     idle ─open→ connecting ─auth 200→ connected
 *                   │                     │ unexpected close, 4408, 4429, maintenance
 *                   └──────────→ reconnecting (backoff + jitter, retried forever;
 *                                at once after 1012 from a server that had served us)
 *     auth 400/401/403/404 or close 4400/4401/4403/4404 → error / unauthorized /
 *         forbidden / not-found: terminal, no retry until `retry()`
 *     close() → closed (open() starts again); reset() clears a terminal status
 *
 * The first frame on every socket is `{"token", "lastUpdate"}`; `lastUpdate`
 * is read from the state when the socket opens, so a reconnect asks only for
 * what changed. Every event handler checks that its socket is still the
 * current one, so a socket being closed (StrictMode remount, restart) can
 * never act on the connection again. Handlers are never detached: the `ws`
 * package throws on an `error` event without a listener.
 */

import { backoffDelay, type ReconnectOptions } from './backoff';
import { ConnectionError, RxDjangoError } from './errors';
import {
  CloseCode,
  MessageType,
  StatusCode,
  decodeFrame,
  encodeFrame,
  type AuthMessage,
  type ClientFrame,
  type DecodedFrame,
} from './protocol';

export type ConnectionStatus =
  | 'idle'
  | 'connecting'
  | 'connected'
  | 'reconnecting'
  | 'closed'
  | 'unauthorized'
  | 'forbidden'
  | 'not-found'
  | 'error';

/** Statuses after which the connection waits for an explicit `retry()`. */
export const TERMINAL_STATUSES: ReadonlySet<ConnectionStatus> = new Set([
  'unauthorized',
  'forbidden',
  'not-found',
  'error',
]);

const TERMINAL = [...TERMINAL_STATUSES];

const TRANSITIONS: Readonly<Record<ConnectionStatus, readonly ConnectionStatus[]>> = {
  idle: ['connecting', 'closed', 'error'],
  connecting: ['connected', 'reconnecting', 'closed', ...TERMINAL],
  connected: ['reconnecting', 'closed', ...TERMINAL],
  reconnecting: ['connected', 'closed', ...TERMINAL],
  closed: ['connecting', 'error'],
  unauthorized: ['connecting', 'closed', 'error'],
  forbidden: ['connecting', 'closed', 'error'],
  'not-found': ['connecting', 'closed', 'error'],
  error: ['connecting', 'closed'],
};

/**
 * The part of a WebSocket this library uses; the browser's `WebSocket` and
 * the `ws` package both fit. Handler parameters are `never` because only
 * assignment is needed, and the two implementations type their events
 * differently; the handlers this module installs read `data`, `code` and
 * `reason` only.
 */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((event: never) => void) | null;
  onmessage: ((event: never) => void) | null;
  onclose: ((event: never) => void) | null;
  onerror: ((event: never) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface ConnectionConfig {
  /** The socket URL; called at each connect so that configuration errors surface as status. */
  readonly url: () => string;
  readonly token: string | null;
  readonly lastUpdate: () => number | null;
  readonly WebSocket: WebSocketConstructor | undefined;
  readonly reconnect: ReconnectOptions;
  readonly random?: () => number;
}

export interface ConnectionHandlers {
  /** The server accepted the token: queued requests may go. */
  authenticated(): void;
  /** Any decoded frame other than the `auth` reply. */
  frame(frame: DecodedFrame): void;
  /** An authenticated socket is gone (any cause): requests in flight have no answer coming. */
  disconnected(): void;
  statusChanged(status: ConnectionStatus, error: ConnectionError | null): void;
}

const AUTH_FAILURES: ReadonlyMap<number, ConnectionStatus> = new Map<number, ConnectionStatus>([
  [StatusCode.BAD_REQUEST, 'error'],
  [StatusCode.UNAUTHORIZED, 'unauthorized'],
  [StatusCode.FORBIDDEN, 'forbidden'],
  [StatusCode.NOT_FOUND, 'not-found'],
]);

const CLOSE_FAILURES: ReadonlyMap<number, ConnectionStatus> = new Map<number, ConnectionStatus>([
  [CloseCode.BAD_REQUEST, 'error'],
  [CloseCode.UNAUTHORIZED, 'unauthorized'],
  [CloseCode.FORBIDDEN, 'forbidden'],
  [CloseCode.NOT_FOUND, 'not-found'],
]);

interface CloseEventLike {
  code?: number;
  reason?: string;
}

export class Connection {
  private socket: WebSocketLike | null = null;
  private authed = false;
  private attempt = 0;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private currentStatus: ConnectionStatus = 'idle';
  private currentError: ConnectionError | null = null;

  constructor(
    private readonly config: ConnectionConfig,
    private readonly handlers: ConnectionHandlers,
  ) {}

  get status(): ConnectionStatus {
    return this.currentStatus;
  }

  get error(): ConnectionError | null {
    return this.currentError;
  }

  /** Authenticated and able to send. */
  get ready(): boolean {
    return this.authed && this.socket !== null;
  }

  /** Start connecting unless already active or stopped by a terminal failure. */
  open(): void {
    if (this.currentStatus === 'idle' || this.currentStatus === 'closed') {
      this.attempt = 0;
      this.connect('connecting');
    }
  }

  /** Close on purpose: no reconnect. A terminal status is kept (it says why). */
  close(): void {
    this.cancelRetry();
    this.dropSocket('client closed');
    if (!TERMINAL_STATUSES.has(this.currentStatus)) this.setStatus('closed');
  }

  /** Leave now and come back after a backoff delay (server maintenance). */
  restart(): void {
    if (!this.isActive()) return;
    this.cancelRetry();
    this.dropSocket('maintenance');
    this.scheduleReconnect();
  }

  /** Forget a terminal failure without connecting: the next `open()` starts again. */
  reset(): void {
    this.cancelRetry();
    this.dropSocket('reset');
    this.currentError = null;
    this.setStatus(this.currentStatus === 'idle' ? 'idle' : 'closed');
  }

  /** Connect now: after a terminal failure, or to skip a backoff wait. */
  retry(): void {
    this.cancelRetry();
    this.dropSocket('retry');
    this.attempt = 0;
    this.currentError = null;
    this.connect(this.currentStatus === 'reconnecting' || this.currentStatus === 'connected' ? 'reconnecting' : 'connecting');
  }

  /** Send on the authenticated socket; false when there is none. */
  send(frame: ClientFrame): boolean {
    if (!this.ready || this.socket === null) return false;
    try {
      this.socket.send(encodeFrame(frame));
      return true;
    } catch {
      return false;
    }
  }

  // ------------------------------------------------------------ internals

  private isActive(): boolean {
    return (
      this.currentStatus === 'connecting' ||
      this.currentStatus === 'connected' ||
      this.currentStatus === 'reconnecting'
    );
  }

  private connect(status: 'connecting' | 'reconnecting'): void {
    const Impl =
      this.config.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (Impl === undefined) {
      this.fail(
        new ConnectionError(
          0,
          'no WebSocket implementation: pass options.WebSocket (in Node: `import WebSocket from "ws"`)',
        ),
        'error',
      );
      return;
    }
    let socket: WebSocketLike;
    try {
      const url = this.config.url();
      this.setStatus(status);
      socket = new Impl(url);
    } catch (cause) {
      const message = cause instanceof Error ? cause.message : String(cause);
      const code = cause instanceof RxDjangoError && typeof cause.code === 'number' ? cause.code : 0;
      this.fail(new ConnectionError(code, message), 'error');
      return;
    }
    this.socket = socket;
    this.authed = false;
    socket.onopen = () => {
      if (this.socket !== socket) return;
      try {
        socket.send(encodeFrame({ token: this.config.token, lastUpdate: this.config.lastUpdate() }));
      } catch {
        // The socket failed between open and send; its close event follows.
      }
    };
    socket.onmessage = (event: { data: unknown }) => {
      if (this.socket === socket) this.receive(event.data);
    };
    socket.onclose = (event: CloseEventLike) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.closed(event.code ?? 1006, event.reason ?? '');
    };
    socket.onerror = () => {
      // Always followed by a close event, which decides what happens.
    };
  }

  private receive(data: unknown): void {
    const frame = decodeFrame(data);
    if (frame.kind === 'control' && frame.message.type === MessageType.AUTH) {
      this.authReply(frame.message);
      return;
    }
    this.handlers.frame(frame);
    if (frame.kind === 'control' && frame.message.type === MessageType.MAINTENANCE) this.restart();
  }

  private authReply(message: AuthMessage): void {
    if (message.statusCode === StatusCode.OK) {
      this.authed = true;
      this.attempt = 0;
      this.currentError = null;
      this.setStatus('connected');
      this.handlers.authenticated();
      return;
    }
    const status = AUTH_FAILURES.get(message.statusCode);
    // Other codes (408 auth timeout) are followed by a close that reconnects.
    if (status === undefined) return;
    this.fail(
      new ConnectionError(message.statusCode, message.error ?? `authentication refused (${message.statusCode})`),
      status,
    );
  }

  private closed(code: number, reason: string): void {
    if (this.authed) {
      this.authed = false;
      this.handlers.disconnected();
    }
    const status = CLOSE_FAILURES.get(code);
    if (status !== undefined) {
      this.fail(new ConnectionError(code - 4000, reason || `closed by the server (${code})`), status);
      return;
    }
    // Anything else (network loss, 1000 after auth, 4408, 4429, 1011) is
    // worth another try: the state stays and the catch-up fills the gap. A
    // process restarting (1012) closed a client it served: another process
    // serves it at once. (Closed again before being served, it backs off.)
    this.scheduleReconnect(code === CloseCode.RESTARTING && this.attempt === 0);
  }

  private fail(error: ConnectionError, status: ConnectionStatus): void {
    this.cancelRetry();
    this.dropSocket(error.message);
    this.currentError = error;
    this.setStatus(status);
  }

  private scheduleReconnect(atOnce = false): void {
    const delay = atOnce ? 0 : backoffDelay(this.attempt, this.config.reconnect, this.config.random);
    this.attempt += 1;
    this.setStatus('reconnecting');
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.connect('reconnecting');
    }, delay);
  }

  private cancelRetry(): void {
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
  }

  /** Forget the current socket and close it; tell the channel if it was authenticated. */
  private dropSocket(reason: string): void {
    const socket = this.socket;
    this.socket = null;
    if (socket !== null) {
      try {
        socket.close(CloseCode.NORMAL, reason.slice(0, 120));
      } catch {
        // Closing a socket that never opened may throw in some implementations.
      }
    }
    if (this.authed) {
      this.authed = false;
      this.handlers.disconnected();
    }
  }

  private setStatus(next: ConnectionStatus): void {
    if (next === this.currentStatus) return;
    if (!TRANSITIONS[this.currentStatus].includes(next)) {
      throw new Error(`rxdjango: connection cannot go from "${this.currentStatus}" to "${next}"`);
    }
    this.currentStatus = next;
    this.handlers.statusChanged(next, this.currentError);
  }
}
