import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ConfigurationError, ContextChannel, type ConnectionStatus } from '@rxdjango/react/core';
import { backoffDelay } from '../src/backoff';
import { joinURL } from '../src/url';
import { JobChannel, JobListChannel } from './fixtures/jobs.channels';
import type { JobType } from './fixtures/jobs.interfaces';
import { socketClass } from './support/fakeSocket';
import { jobHarness, listHarness, loadJob } from './support/channel';
import { JOB, TASK, anchors, auth, create, del, end, jobRecords, update } from './support/records';

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

const flushMicrotasks = async (): Promise<void> => {
  await vi.advanceTimersByTimeAsync(0);
};

describe('opening', () => {
  it('does nothing at construction', () => {
    const Socket = socketClass();
    const channel = new JobChannel(1, 't', { WebSocket: Socket });
    expect(Socket.instances).toHaveLength(0);
    expect(channel.status).toBe('idle');
    expect(vi.getTimerCount()).toBe(0);
  });

  it('opens at baseURL + endpoint with the arguments filled in', () => {
    const { socket } = jobHarness({ connect: false });
    expect(socket().url).toBe('ws://127.0.0.1:8000/ws/job/1/');
  });

  it('lets options.baseURL override the generated one, whatever the slashes', () => {
    const Socket = socketClass();
    new JobChannel(7, 't', { WebSocket: Socket, baseURL: 'wss://example.test/api' }).connect();
    new JobChannel(8, 't', { WebSocket: Socket, baseURL: 'https://example.test/api//' }).connect();
    expect(Socket.instances.map((s) => s.url)).toEqual(['wss://example.test/api/ws/job/7/', 'wss://example.test/api/ws/job/8/']);
    expect(joinURL('ws://h:1', '/ws/x/')).toBe('ws://h:1/ws/x/');
  });

  it('fails with a clear status when there is no base URL and no page', () => {
    const channel = new JobListChannel('t', { WebSocket: socketClass() });
    channel.connect();
    expect(channel.status).toBe('error');
    expect(channel.getSnapshot().error?.message).toMatch(/options\.baseURL/);
  });

  it('refuses a missing route argument at construction', () => {
    const Socket = socketClass();
    class NeedsTwo extends ContextChannel<JobType> {
      static readonly endpoint = 'ws/{org}/{team}/';
      static readonly anchorType = JobChannel.anchorType;
      static readonly model = JobChannel.model;
      constructor() {
        super({ org: 1 }, 't', { WebSocket: Socket });
      }
    }
    expect(() => new NeedsTwo()).toThrow(ConfigurationError);
  });

  it('reports a missing WebSocket implementation as an error status', () => {
    const channel = new JobChannel(1, 't', {});
    const original = (globalThis as { WebSocket?: unknown }).WebSocket;
    (globalThis as { WebSocket?: unknown }).WebSocket = undefined;
    try {
      channel.connect();
    } finally {
      (globalThis as { WebSocket?: unknown }).WebSocket = original;
    }
    expect(channel.status).toBe('error');
    expect(channel.getSnapshot().error?.message).toMatch(/options\.WebSocket/);
  });

  it('sends the token and lastUpdate null first, then is connected on auth 200', () => {
    const { channel, socket } = jobHarness({ connect: false });
    expect(channel.status).toBe('connecting');
    socket().open();
    expect(socket().frames()).toEqual([{ token: 'secret', lastUpdate: null }]);
    socket().receive(auth());
    expect(channel.status).toBe('connected');
  });
  it('sends a null token when made without one (the session cookie authenticates)', () => {
    const Socket = socketClass();
    const channel = new JobChannel(1, null, { WebSocket: Socket, baseURL: 'ws://test/' });
    channel.connect();
    const socket = Socket.instances[0]!;
    socket.open();
    expect(socket.frames()).toEqual([{ token: null, lastUpdate: null }]);
    socket.receive(auth());
    expect(channel.status).toBe('connected');
  });
});

describe('reconnecting', () => {
  it('sends the highest timestamp seen as lastUpdate on reconnect', async () => {
    const { channel, socket, Socket } = jobHarness();
    loadJob(socket(), jobRecords(10), 11);
    socket().receive([update(TASK, 10, { done: true }, 12.5)]);
    socket().serverClose(1006);
    expect(channel.status).toBe('reconnecting');
    await vi.advanceTimersByTimeAsync(100);
    expect(Socket.instances).toHaveLength(2);
    socket().open();
    expect(socket().frames()[0]).toEqual({ token: 'secret', lastUpdate: 12.5 });
  });

  it('keeps lastUpdate from before an interrupted load', async () => {
    const { socket } = jobHarness();
    loadJob(socket(), jobRecords(10), 11);
    socket().serverClose(1006);
    await vi.advanceTimersByTimeAsync(100);
    socket().open();
    socket().receive(auth());
    socket().receive(anchors(1));
    socket().receive(jobRecords(20)); // no end marker
    socket().serverClose(1006);
    await vi.advanceTimersByTimeAsync(200);
    socket().open();
    expect(socket().frames()[0]).toEqual({ token: 'secret', lastUpdate: 11 });
  });

  it.each([
    ['unexpected close', 1006],
    ['clean close after auth', 1000],
    ['auth timeout / slow client', 4408],
    ['rate limit', 4429],
  ])('reconnects after a %s (%i) with backoff', async (_label, code) => {
    const { channel, socket, Socket } = jobHarness();
    socket().serverClose(code);
    expect(channel.status).toBe('reconnecting');
    await vi.advanceTimersByTimeAsync(99);
    expect(Socket.instances).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(Socket.instances).toHaveLength(2);
    socket().open();
    socket().receive(auth());
    expect(channel.status).toBe('connected');
  });

  it('backs off exponentially while the server stays down, then resets after success', async () => {
    const { socket, Socket } = jobHarness();
    const delays: number[] = [];
    for (let i = 0; i < 5; i++) {
      socket().serverClose(1006);
      const count = Socket.instances.length;
      let waited = 0;
      while (Socket.instances.length === count) {
        await vi.advanceTimersByTimeAsync(10);
        waited += 10;
      }
      delays.push(waited);
    }
    expect(delays).toEqual([100, 200, 400, 800, 1000]);
    socket().open();
    socket().receive(auth());
    socket().serverClose(1006);
    await vi.advanceTimersByTimeAsync(100);
    expect(Socket.instances).toHaveLength(7);
  });

  it('reconnects at once when the process serving it restarts (1012), then backs off', async () => {
    const { channel, socket, Socket } = jobHarness();
    socket().serverClose(1012);
    expect(channel.status).toBe('reconnecting');
    await flushMicrotasks();
    expect(Socket.instances).toHaveLength(2);
    // Closed again before being served (another draining process): the usual backoff,
    // as for a second failure in a row.
    socket().open();
    socket().serverClose(1012);
    await vi.advanceTimersByTimeAsync(199);
    expect(Socket.instances).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(1);
    expect(Socket.instances).toHaveLength(3);
    socket().open();
    socket().receive(auth());
    expect(channel.status).toBe('connected');
  });

  it('reconnects after a maintenance message and exposes it', async () => {
    const { channel, socket, Socket } = jobHarness();
    const seen: unknown[] = [];
    channel.on('system', (m) => seen.push(m.message));
    const first = socket();
    first.receive({ type: 'maintenance', source: 'maintenance', message: 'back soon' });
    expect(first.closedWith?.code).toBe(1000);
    expect(channel.status).toBe('reconnecting');
    expect(channel.getSnapshot().lastSystemMessage).toEqual({ type: 'maintenance', source: 'maintenance', message: 'back soon' });
    expect(seen).toEqual(['back soon']);
    await vi.advanceTimersByTimeAsync(100);
    expect(Socket.instances).toHaveLength(2);
  });

  it('exposes system messages without reconnecting', () => {
    const { channel, socket } = jobHarness();
    socket().receive({ type: 'system', source: 'system', message: { text: 'deploy at 5' } });
    expect(channel.getSnapshot().lastSystemMessage?.message).toEqual({ text: 'deploy at 5' });
    expect(channel.status).toBe('connected');
  });

  it('ignores events of a socket it already left', async () => {
    const { channel, socket, Socket } = jobHarness();
    const old = socket();
    old.receive({ type: 'maintenance', source: 'maintenance', message: '' });
    old.receive([update(TASK, 10, { title: 'ghost' })]);
    old.serverClose(4401);
    expect(channel.status).toBe('reconnecting');
    await vi.advanceTimersByTimeAsync(100);
    expect(Socket.instances).toHaveLength(2);
  });

  it('reconnect() connects at once, skipping the backoff wait', () => {
    const { channel, socket, Socket } = jobHarness();
    socket().serverClose(1006);
    channel.reconnect();
    expect(Socket.instances).toHaveLength(2);
    expect(Socket.live()).toHaveLength(1);
  });
});

describe('refusals', () => {
  it.each<[number, ConnectionStatus]>([
    [400, 'error'],
    [401, 'unauthorized'],
    [403, 'forbidden'],
    [404, 'not-found'],
  ])('does not reconnect after auth %i: status %s', async (code, status) => {
    const { channel, socket, Socket } = jobHarness({ connect: false });
    socket().open();
    socket().receive(auth(code, `error/${status}`));
    socket().serverClose(4000 + code);
    expect(channel.status).toBe(status);
    expect(channel.getSnapshot().error).toMatchObject({ code, message: `error/${status}` });
    await vi.advanceTimersByTimeAsync(60_000);
    expect(Socket.instances).toHaveLength(1);
  });

  it.each<[number, ConnectionStatus]>([
    [4401, 'unauthorized'],
    [4403, 'forbidden'],
    [4404, 'not-found'],
    [4400, 'error'],
  ])('does not reconnect after close code %i alone', async (code, status) => {
    const { channel, socket, Socket } = jobHarness({ connect: false });
    socket().open();
    socket().serverClose(code, 'nope');
    expect(channel.status).toBe(status);
    expect(channel.getSnapshot().error?.code).toBe(code - 4000);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(Socket.instances).toHaveLength(1);
  });

  it('reconnect() without subscribers clears the refusal without opening a socket', async () => {
    const { channel, socket, Socket, unsubscribe } = jobHarness({ connect: false });
    socket().open();
    socket().receive(auth(401, 'error/unauthorized'));
    unsubscribe();
    await vi.advanceTimersByTimeAsync(1000);
    channel.reconnect();
    expect(Socket.instances).toHaveLength(1);
    expect(channel.status).toBe('closed');
    expect(channel.getSnapshot().error).toBeNull();
    const again = channel.subscribe(() => undefined);
    expect(Socket.instances).toHaveLength(2);
    again();
  });

  it('stays refused across resubscription until reconnect()', async () => {
    const { channel, socket, Socket, unsubscribe } = jobHarness({ connect: false });
    socket().open();
    socket().receive(auth(403, 'error/forbidden'));
    unsubscribe();
    const again = channel.subscribe(() => undefined);
    await vi.advanceTimersByTimeAsync(1000);
    expect(Socket.instances).toHaveLength(1);
    expect(channel.status).toBe('forbidden');
    channel.reconnect();
    expect(Socket.instances).toHaveLength(2);
    expect(channel.status).toBe('connecting');
    again();
  });
});

describe('subscribers', () => {
  it('survives subscribe / unsubscribe / subscribe (StrictMode) with one open socket', async () => {
    const Socket = socketClass();
    const channel = new JobChannel(1, 't', { WebSocket: Socket, closeDelay: 50 });
    const first = channel.subscribe(() => undefined);
    first();
    const second = channel.subscribe(() => undefined);
    await vi.advanceTimersByTimeAsync(1000);
    expect(Socket.instances).toHaveLength(1);
    expect(Socket.live()).toHaveLength(1);
    Socket.last().open();
    Socket.last().receive(auth());
    expect(channel.status).toBe('connected');
    second();
  });

  it('closes the socket only after the last subscriber left and the delay passed', async () => {
    const { channel, socket, unsubscribe } = jobHarness();
    const other = channel.subscribe(() => undefined);
    unsubscribe();
    await vi.advanceTimersByTimeAsync(1000);
    expect(socket().closedWith).toBeUndefined();
    other();
    other(); // a second call is a no-op
    await vi.advanceTimersByTimeAsync(49);
    expect(socket().closedWith).toBeUndefined();
    await vi.advanceTimersByTimeAsync(1);
    expect(socket().closedWith?.code).toBe(1000);
    expect(channel.status).toBe('closed');
    await vi.advanceTimersByTimeAsync(60_000);
    expect(channel.status).toBe('closed');
  });

  it('reopens with lastUpdate when a subscriber comes back after the close', async () => {
    const { channel, socket, unsubscribe, Socket } = jobHarness();
    loadJob(socket(), jobRecords(3), 4);
    unsubscribe();
    await vi.advanceTimersByTimeAsync(50);
    await flushMicrotasks();
    const again = channel.subscribe(() => undefined);
    expect(Socket.instances).toHaveLength(2);
    expect(channel.status).toBe('connecting');
    socket().open();
    expect(socket().frames()[0]).toEqual({ token: 'secret', lastUpdate: 4 });
    // The state held so far is still there while reconnecting.
    expect((channel.state as JobType).tasks).toHaveLength(2);
    again();
  });

  it('connect() / disconnect() hold the socket without subscribers', () => {
    const Socket = socketClass();
    const channel = new JobChannel(1, 't', { WebSocket: Socket });
    channel.connect();
    channel.connect();
    expect(Socket.instances).toHaveLength(1);
    channel.disconnect();
    expect(Socket.last().closedWith?.code).toBe(1000);
    expect(channel.status).toBe('closed');
  });

  it('notifies subscribers only when the snapshot changes', () => {
    const { socket, notified } = jobHarness();
    const before = notified();
    socket().receive(anchors(1));
    socket().receive(jobRecords());
    expect(notified()).toBe(before); // loading: nothing published yet
    socket().receive([end()]);
    expect(notified()).toBe(before + 1);
  });
});

describe('state traffic through the channel', () => {
  it('publishes the state once the initial load is complete', () => {
    const { channel, socket } = jobHarness();
    expect(channel.getSnapshot()).toMatchObject({ state: undefined, ready: false, connectionStatus: 'connected' });
    loadJob(socket());
    const snapshot = channel.getSnapshot();
    expect(snapshot.ready).toBe(true);
    expect(snapshot.state?.tasks.map((t) => t.title)).toEqual(['A', 'B']);
  });

  it('keeps showing the previous state during a resync, then swaps', async () => {
    const { channel, socket } = jobHarness();
    loadJob(socket());
    const before = channel.state;
    socket().serverClose(1006);
    await vi.advanceTimersByTimeAsync(100);
    socket().open();
    socket().receive(auth());
    socket().receive(anchors(1));
    socket().receive({ type: 'resync', anchorId: 1 });
    socket().receive(jobRecords(5).slice(0, 1));
    expect(channel.state).toBe(before);
    socket().receive([{ ...jobRecords(5)[0], tasks: [] }, end(5)]);
    expect(channel.state?.tasks).toEqual([]);
    expect(channel.lastUpdate).toBe(5);
  });

  it('starts runtime state from runtimeDefaults and applies runtimeVar', () => {
    const { channel, socket } = jobHarness();
    expect(channel.runtimeState).toEqual({ counter: 0 });
    socket().receive({ type: 'runtimeVar', var: 'counter', value: 3 });
    expect(channel.runtimeState.counter).toBe(3);
  });

  it('collects notifications apart from the state and emits them', () => {
    const { channel, socket } = jobHarness();
    loadJob(socket());
    const state = channel.state;
    const got: unknown[] = [];
    channel.on('notification', (n) => got.push(n.text));
    // Exactly what broadcast_notification sends: the caller's keys and the type, nothing else.
    socket().receive([{ _instance_type: '_notification', text: 'hello' }]);
    expect(got).toEqual(['hello']);
    expect(channel.getSnapshot().notifications).toHaveLength(1);
    expect(channel.state).toBe(state);
  });

  it('reports bad and unknown frames without dropping the socket', () => {
    const { channel, socket } = jobHarness();
    const errors: unknown[] = [];
    const custom: unknown[] = [];
    channel.on('serverError', (e) => errors.push(e));
    channel.on('message', (m) => custom.push(m));
    socket().receive('not json');
    socket().receive({ type: 'error', error: { code: 400, message: 'bad frame' } });
    socket().receive({ type: 'confetti', amount: 3 });
    expect(errors).toEqual([
      { code: 400, message: 'frame is not valid JSON' },
      { code: 400, message: 'bad frame' },
    ]);
    expect(custom).toEqual([{ type: 'confetti', amount: 3 }]);
    expect(channel.status).toBe('connected');
  });
});

describe("the original client's fields", () => {
  it('connected follows the connected status', async () => {
    const { channel, socket } = jobHarness({ connect: false });
    expect(channel.getSnapshot()).toMatchObject({ connectionStatus: 'connecting', connected: false });
    socket().open();
    expect(channel.getSnapshot().connected).toBe(false);
    socket().receive(auth());
    expect(channel.getSnapshot().connected).toBe(true);
    socket().serverClose(1006);
    expect(channel.getSnapshot()).toMatchObject({ connectionStatus: 'reconnecting', connected: false });
    await vi.advanceTimersByTimeAsync(100);
    socket().open();
    socket().receive(auth());
    expect(channel.getSnapshot().connected).toBe(true);
  });

  it('noConnectionSince: undefined before the first connection, the time of the drop until reconnected', async () => {
    const { channel, socket } = jobHarness({ connect: false });
    // A first attempt that fails is not a lost connection.
    socket().serverClose(1006);
    expect(channel.status).toBe('reconnecting');
    expect(channel.getSnapshot().noConnectionSince).toBeUndefined();
    await vi.advanceTimersByTimeAsync(100);
    socket().open();
    socket().receive(auth());
    loadJob(socket());
    expect(channel.getSnapshot().noConnectionSince).toBeUndefined();

    vi.setSystemTime(new Date('2026-01-02T03:04:05Z'));
    socket().serverClose(1006);
    const since = channel.getSnapshot().noConnectionSince;
    expect(since).toBeInstanceOf(Date);
    expect(since?.toISOString()).toBe('2026-01-02T03:04:05.000Z');
    expect(channel.getSnapshot().no_connection_since).toBe(since);
    // Other changes meanwhile keep the same Date.
    channel.save(TASK, 10, { title: 'offline' }).catch(() => undefined);
    expect((channel.state as JobType).tasks[0]?.title).toBe('offline');
    expect(channel.getSnapshot().noConnectionSince).toBe(since);

    // Failed retries keep the moment the connection went.
    await vi.advanceTimersByTimeAsync(100);
    socket().serverClose(1006);
    await vi.advanceTimersByTimeAsync(200);
    expect(channel.getSnapshot().noConnectionSince).toBe(since);

    socket().open();
    socket().receive(auth());
    expect(channel.getSnapshot()).toMatchObject({
      connected: true,
      noConnectionSince: undefined,
      no_connection_since: undefined,
    });
  });

  it('noConnectionSince is set when the client closes a connected socket, cleared when it reopens', async () => {
    const { channel, socket, unsubscribe } = jobHarness();
    unsubscribe();
    await vi.advanceTimersByTimeAsync(50);
    expect(channel.status).toBe('closed');
    expect(channel.getSnapshot().noConnectionSince).toBeInstanceOf(Date);
    const again = channel.subscribe(() => undefined);
    socket().open();
    socket().receive(auth());
    expect(channel.getSnapshot().noConnectionSince).toBeUndefined();
    again();
  });

  it('keeps the snapshot object while nothing changed', () => {
    const { channel, socket, notified } = jobHarness();
    loadJob(socket());
    const snapshot = channel.getSnapshot();
    const count = notified();
    socket().receive({ type: 'custom-frame' });
    socket().receive([]); // a records frame: the snapshot is rebuilt and compared
    expect(channel.getSnapshot()).toBe(snapshot);
    expect(notified()).toBe(count);
  });

  it('empty: a list channel with no anchor after its initial state, false once one arrives', () => {
    const { channel, socket } = listHarness();
    expect(channel.getSnapshot()).toMatchObject({ ready: false, empty: false });
    socket().receive(anchors());
    expect(channel.getSnapshot()).toMatchObject({ ready: true, state: [], empty: true });
    socket().receive({ type: 'appendAnchor', anchorId: 3 });
    socket().receive([create(JOB, 3, { name: 'new', tasks: [], spec: null })]);
    expect(channel.getSnapshot().state).toHaveLength(1);
    expect(channel.getSnapshot().empty).toBe(false);
    socket().receive([del(JOB, 3, 3)]);
    expect(channel.getSnapshot()).toMatchObject({ state: [], empty: true });
  });

  it('empty is false for a list channel with anchors and for a single channel', () => {
    const list = listHarness();
    list.socket().receive(anchors(1));
    list.socket().receive([...jobRecords(), end()]);
    expect(list.channel.getSnapshot().state).toHaveLength(1);
    expect(list.channel.getSnapshot().empty).toBe(false);
    const single = jobHarness();
    single.socket().receive(anchors());
    expect(single.channel.getSnapshot()).toMatchObject({ ready: true, state: undefined, empty: false });
  });
});

describe('backoffDelay', () => {
  it('grows exponentially up to maxDelay', () => {
    const options = { initialDelay: 100, maxDelay: 1000, jitter: 0 };
    expect([0, 1, 2, 3, 4, 50].map((a) => backoffDelay(a, options))).toEqual([100, 200, 400, 800, 1000, 1000]);
  });

  it('spreads delays by the jitter fraction, never above maxDelay', () => {
    const options = { initialDelay: 1000, maxDelay: 5000, jitter: 0.5 };
    expect(backoffDelay(0, options, () => 0)).toBe(500);
    expect(backoffDelay(0, options, () => 0.999999)).toBe(1500);
    expect(backoffDelay(5, options, () => 0.999999)).toBe(5000);
  });
});
