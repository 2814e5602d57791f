/**
 * The channel over a real socket in Node, with the `ws` package injected as
 * options.WebSocket. The server here is a few lines speaking the protocol on
 * 127.0.0.1; the real Django server is exercised by the project's
 * integration tests.
 */
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { JobChannel } from './fixtures/jobs.channels';
import type { JobType } from './fixtures/jobs.interfaces';
import { TASK, anchors, auth, end, jobRecords, update } from './support/records';

let server: WebSocketServer | undefined;

afterEach(async () => {
  await new Promise<void>((resolve) => {
    if (server === undefined) return resolve();
    for (const client of server.clients) client.terminate();
    server.close(() => resolve());
  });
  server = undefined;
});

function startServer(onFrame: (socket: WebSocket, frame: Record<string, unknown>, path: string) => void): Promise<number> {
  return new Promise((resolve) => {
    server = new WebSocketServer({ host: '127.0.0.1', port: 0 }, () => {
      const address = server?.address();
      resolve(typeof address === 'object' && address !== null ? address.port : 0);
    });
    server.on('connection', (socket, request) => {
      socket.on('message', (data) => onFrame(socket, JSON.parse(String(data)) as Record<string, unknown>, request.url ?? ''));
    });
  });
}

function until(check: () => boolean, timeoutMs = 2000): Promise<void> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const poll = (): void => {
      if (check()) resolve();
      else if (Date.now() - started > timeoutMs) reject(new Error('condition not met in time'));
      else setTimeout(poll, 5);
    };
    poll();
  });
}

describe('in Node with ws', () => {
  it('authenticates, loads the state, applies deltas and answers actions', async () => {
    const paths: string[] = [];
    const port = await startServer((socket, frame, path) => {
      if ('token' in frame) {
        paths.push(path);
        expect(frame).toEqual({ token: 'secret', lastUpdate: null });
        socket.send(JSON.stringify(auth()));
        socket.send(JSON.stringify(anchors(1)));
        socket.send(JSON.stringify([...jobRecords(), end(1)]));
      } else if (frame.type === 'action') {
        socket.send(JSON.stringify({ type: 'actionResponse', callId: frame.callId, result: null }));
        socket.send(JSON.stringify([update(TASK, 10, { title: String((frame.params as unknown[])[1]) })]));
      }
    });
    const channel = new JobChannel(42, 'secret', { WebSocket, baseURL: `ws://127.0.0.1:${port}` });
    const unsubscribe = channel.subscribe(() => undefined);
    await until(() => channel.getSnapshot().ready);
    expect(paths).toEqual(['/ws/job/42/']);
    expect((channel.state as JobType).tasks.map((t) => t.title)).toEqual(['A', 'B']);
    await expect(channel.renameTask(10, 'renamed')).resolves.toBeNull();
    await until(() => (channel.state as JobType).tasks[0]?.title === 'renamed');
    channel.disconnect();
    unsubscribe();
  });

  it('stops on 4403 and reconnects after a dropped connection', async () => {
    let connections = 0;
    const port = await startServer((socket, frame) => {
      if (!('token' in frame)) return;
      connections += 1;
      if (connections === 1) {
        socket.send(JSON.stringify(auth()));
        socket.terminate();
      } else {
        socket.send(JSON.stringify(auth(403, 'error/forbidden')));
        socket.close(4403);
      }
    });
    const channel = new JobChannel(1, 'secret', {
      WebSocket,
      baseURL: `ws://127.0.0.1:${port}/`,
      reconnect: { initialDelay: 10, maxDelay: 20, jitter: 0 },
    });
    channel.connect();
    await until(() => channel.status === 'forbidden');
    expect(connections).toBe(2);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(connections).toBe(2);
    channel.disconnect();
  });
});
