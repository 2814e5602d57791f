/**
 * Requests that expect one answer (actions, writes): one ordered outbox,
 * a timeout each, and a guarantee that every promise settles exactly once.
 *
 * - A request made while the socket is not authenticated waits in the
 *   outbox and goes out, in call order, when `flush()` runs after auth.
 *   Actions and writes share the outbox because the server processes them
 *   one at a time in the order they were sent.
 * - Every request rejects after `timeoutMs` without an answer, queued or sent.
 * - When the socket drops, requests already sent are rejected (the server
 *   may or may not have run them; the catch-up on reconnect brings the
 *   truth). Requests never sent stay queued for the next connection.
 */

import type { ClientFrame } from './protocol';
import { ActionError } from './errors';
import { ClientErrorCode } from './protocol';

export type Outcome<T> = { ok: true; value: T } | { ok: false; error: ActionError };

export interface Transport {
  /** Send now if the socket is authenticated; false when it is not. */
  trySend(frame: ClientFrame): boolean;
}

interface PendingRequest {
  readonly frame: ClientFrame;
  sent: boolean;
  readonly timer: ReturnType<typeof setTimeout>;
  /** Called once with the outcome; resolves or rejects the caller's promise. */
  readonly finish: (outcome: Outcome<unknown>) => void;
}

export class RequestTracker {
  /** Insertion-ordered: flush sends in call order. */
  private readonly pending = new Map<string, PendingRequest>();

  constructor(
    private readonly transport: Transport,
    private readonly timeoutMs: number,
  ) {}

  get size(): number {
    return this.pending.size;
  }

  /**
   * Register a request under a unique `key` and send it if possible.
   * `onSettle` runs before the promise settles (writes roll back there).
   */
  start<T>(key: string, frame: ClientFrame, onSettle?: (outcome: Outcome<T>) => void): Promise<T> {
    if (this.pending.has(key)) {
      return Promise.reject(new ActionError(ClientErrorCode.BAD_REQUEST, `duplicate request id ${key}`));
    }
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.settle(key, {
          ok: false,
          error: new ActionError(ClientErrorCode.TIMEOUT, `no answer within ${this.timeoutMs} ms`),
        });
      }, this.timeoutMs);
      const finish = (outcome: Outcome<unknown>): void => {
        // The key ties the outcome to this request's own T; see `settle`.
        const typed = outcome as Outcome<T>;
        onSettle?.(typed);
        if (typed.ok) resolve(typed.value);
        else reject(typed.error);
      };
      const request: PendingRequest = { frame, sent: false, timer, finish };
      this.pending.set(key, request);
      if (this.noneUnsentBefore(key)) request.sent = this.transport.trySend(frame);
    });
  }

  /** Settle one request; false when it is unknown or already settled. */
  settle(key: string, outcome: Outcome<unknown>): boolean {
    const request = this.pending.get(key);
    if (request === undefined) return false;
    this.pending.delete(key);
    clearTimeout(request.timer);
    request.finish(outcome);
    return true;
  }

  /** Send the queued requests, in order, until the transport refuses. */
  flush(): void {
    for (const request of this.pending.values()) {
      if (request.sent) continue;
      if (!this.transport.trySend(request.frame)) return;
      request.sent = true;
    }
  }

  /** The socket dropped: reject what was sent; keep what was not. */
  failSent(error: ActionError): void {
    for (const [key, request] of [...this.pending]) {
      if (request.sent) this.settle(key, { ok: false, error });
    }
  }

  /** The channel cannot talk anymore (auth refused): reject everything. */
  failAll(error: ActionError): void {
    for (const key of [...this.pending.keys()]) this.settle(key, { ok: false, error });
  }

  /** Keep call order: a new request may not overtake one still queued. */
  private noneUnsentBefore(key: string): boolean {
    for (const [k, request] of this.pending) {
      if (k === key) return true;
      if (!request.sent) return false;
    }
    return true;
  }
}
