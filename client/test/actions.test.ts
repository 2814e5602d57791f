import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ActionError } from '@rxdjango/react/core';
import { jobHarness } from './support/channel';
import { TASK, auth } from './support/records';

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

type Frame = Record<string, unknown>;
const actionFrames = (frames: unknown[]): Frame[] => (frames as Frame[]).filter((f) => f.type === 'action');

describe('actions', () => {
  it('numbers calls with a per-channel increasing integer', () => {
    const { channel, socket } = jobHarness();
    void channel.renameTask(10, 'x');
    void channel.callAction('ping', []);
    void channel.callAction('ping');
    const frames = actionFrames(socket().frames());
    expect(frames).toEqual([
      { type: 'action', callId: 1, action: 'rename_task', params: [10, 'x'] },
      { type: 'action', callId: 2, action: 'ping', params: [] },
      { type: 'action', callId: 3, action: 'ping', params: [] },
    ]);
    for (const f of frames) expect(Number.isSafeInteger(f.callId)).toBe(true);
  });

  it('keeps ids unique across channels of the same class and across reconnects', async () => {
    const a = jobHarness();
    const b = jobHarness();
    void a.channel.callAction('x').catch(() => undefined);
    void b.channel.callAction('x');
    a.socket().serverClose(1006);
    await vi.advanceTimersByTimeAsync(100);
    a.socket().open();
    a.socket().receive(auth());
    void a.channel.callAction('y');
    expect(actionFrames(a.socket().frames())[0]?.callId).toBe(2);
    expect(actionFrames(b.socket().frames())[0]?.callId).toBe(1);
  });

  it('resolves with the result', async () => {
    const { channel, socket } = jobHarness();
    const call = channel.callAction<{ ok: boolean }>('do', [1]);
    socket().receive({ type: 'actionResponse', callId: 1, result: { ok: true } });
    await expect(call).resolves.toEqual({ ok: true });
    const none = channel.renameTask(1, 'a');
    socket().receive({ type: 'actionResponse', callId: 2, result: null });
    await expect(none).resolves.toBeNull();
  });

  it('rejects with an ActionError carrying the code and message', async () => {
    const { channel, socket } = jobHarness();
    const call = channel.callAction('explode');
    socket().receive({ type: 'actionResponse', callId: 1, error: { code: 500, message: 'internal error' } });
    const error = await call.catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ActionError);
    expect(error).toMatchObject({ code: 500, message: 'internal error' });
    expect(channel.status).toBe('connected');
  });

  it('queues calls made before auth and sends them in order after it', () => {
    const { channel, socket } = jobHarness({ connect: false });
    void channel.callAction('first');
    socket().open();
    void channel.callAction('second');
    expect(socket().frames()).toEqual([{ token: 'secret', lastUpdate: null }]);
    socket().receive(auth());
    expect(actionFrames(socket().frames()).map((f) => f.action)).toEqual(['first', 'second']);
  });

  it('keeps actions and writes in call order in the queue', () => {
    const { channel, socket } = jobHarness({ connect: false });
    void channel.callAction('before');
    void channel.save(TASK, 10, { title: 'x' }).catch(() => undefined);
    void channel.callAction('after');
    socket().open();
    socket().receive(auth());
    const kinds = (socket().frames() as Frame[]).slice(1).map((f) => f.action ?? f.operation);
    expect(kinds).toEqual(['before', 'save', 'after']);
  });

  it('rejects after actionTimeout without an answer', async () => {
    const { channel } = jobHarness({ actionTimeout: 1000 });
    const call = channel.callAction('slow');
    const caught = call.catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(999);
    let settled = false;
    void call.then(
      () => (settled = true),
      () => (settled = true),
    );
    await vi.advanceTimersByTimeAsync(0);
    expect(settled).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(await caught).toMatchObject({ code: 408 });
  });

  it('times out a call queued while the server is unreachable', async () => {
    const { channel } = jobHarness({ connect: false, actionTimeout: 500 });
    const caught = channel.callAction('never').catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(500);
    expect(await caught).toMatchObject({ code: 408 });
  });

  it('ignores an answer after the timeout and an unknown callId', async () => {
    const { channel, socket } = jobHarness({ actionTimeout: 100 });
    const caught = channel.callAction('slow').catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(100);
    socket().receive({ type: 'actionResponse', callId: 1, result: 'late' });
    socket().receive({ type: 'actionResponse', callId: 99, result: 'stray' });
    expect(await caught).toMatchObject({ code: 408 });
  });

  it('rejects calls in flight when the socket drops, and sends queued ones after reconnect', async () => {
    const { channel, socket } = jobHarness();
    const inFlight = channel.callAction('sent').catch((e: unknown) => e);
    socket().serverClose(1006);
    expect(await inFlight).toMatchObject({ code: 503 });
    const queued = channel.callAction('later');
    await vi.advanceTimersByTimeAsync(100);
    socket().open();
    socket().receive(auth());
    expect(actionFrames(socket().frames())).toEqual([{ type: 'action', callId: 2, action: 'later', params: [] }]);
    socket().receive({ type: 'actionResponse', callId: 2, result: 1 });
    await expect(queued).resolves.toBe(1);
  });

  it('rejects queued calls when auth is refused, and later calls at once', async () => {
    const { channel, socket } = jobHarness({ connect: false });
    const queued = channel.callAction('x').catch((e: unknown) => e);
    socket().open();
    socket().receive(auth(401, 'error/unauthorized'));
    expect(await queued).toMatchObject({ code: 401, message: 'error/unauthorized' });
    await expect(channel.callAction('y')).rejects.toMatchObject({ code: 401 });
  });
});
