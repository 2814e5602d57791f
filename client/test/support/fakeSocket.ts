/**
 * An in-memory WebSocket for unit tests. Each `socketClass()` call returns
 * a fresh class with its own `instances`, so tests never share sockets.
 * The test plays the server: `open()`, `receive(...)`, `serverClose(...)`.
 */
import type { WebSocketConstructor, WebSocketLike } from '@rxdjango/react/core';

export interface FakeSocket extends WebSocketLike {
  readonly url: string;
  readonly sent: string[];
  closedWith: { code: number; reason: string } | undefined;
  /** The connection is established (fires `open`). */
  open(): void;
  /** The server sends one JSON frame (array or object), or a raw string. */
  receive(frame: unknown): void;
  /** The server closes the socket. */
  serverClose(code: number, reason?: string): void;
  /** The frames sent by the client, parsed. */
  frames(): unknown[];
}

export interface FakeSocketClass extends WebSocketConstructor {
  readonly instances: FakeSocket[];
  /** The most recent socket. */
  last(): FakeSocket;
  /** Sockets not closed by either side. */
  live(): FakeSocket[];
}

export function socketClass(): FakeSocketClass {
  const instances: FakeSocket[] = [];

  class Socket implements FakeSocket {
    static readonly instances = instances;
    static last(): FakeSocket {
      const socket = instances[instances.length - 1];
      if (socket === undefined) throw new Error('no socket was opened');
      return socket;
    }
    static live(): FakeSocket[] {
      return instances.filter((s) => s.readyState < 2);
    }

    readyState = 0;
    onopen: ((event: unknown) => void) | null = null;
    onmessage: ((event: { data: unknown }) => void) | null = null;
    onclose: ((event: { code: number; reason: string }) => void) | null = null;
    onerror: ((event: unknown) => void) | null = null;
    readonly sent: string[] = [];
    closedWith: { code: number; reason: string } | undefined;

    constructor(readonly url: string) {
      instances.push(this);
    }

    send(data: string): void {
      if (this.readyState !== 1) throw new Error(`send on a socket in state ${this.readyState}`);
      this.sent.push(data);
    }

    close(code = 1000, reason = ''): void {
      if (this.readyState >= 2) return;
      this.readyState = 3;
      this.closedWith = { code, reason };
      // Like a browser: the close event comes later.
      queueMicrotask(() => this.onclose?.({ code, reason }));
    }

    open(): void {
      this.readyState = 1;
      this.onopen?.({});
    }

    receive(frame: unknown): void {
      this.onmessage?.({ data: typeof frame === 'string' ? frame : JSON.stringify(frame) });
    }

    serverClose(code: number, reason = ''): void {
      this.readyState = 3;
      this.closedWith = { code, reason };
      this.onclose?.({ code, reason });
    }

    frames(): unknown[] {
      return this.sent.map((s) => JSON.parse(s) as unknown);
    }
  }

  return Socket;
}
