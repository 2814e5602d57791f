/** Start a channel on a fake socket and play the server's start sequence. */
import type { ContextChannel, InstanceRecord } from '@rxdjango/react/core';
import { JobChannel, JobListChannel } from '../fixtures/jobs.channels';
import { socketClass, type FakeSocket, type FakeSocketClass } from './fakeSocket';
import { anchors, auth, end, jobRecords } from './records';

export interface Harness<C> {
  channel: C;
  Socket: FakeSocketClass;
  socket: () => FakeSocket;
  unsubscribe: () => void;
  notified: () => number;
}

export function jobHarness(options: { connect?: boolean; actionTimeout?: number } = {}): Harness<JobChannel> {
  const Socket = socketClass();
  const channel = new JobChannel(1, 'secret', {
    WebSocket: Socket,
    reconnect: { initialDelay: 100, maxDelay: 1000, jitter: 0 },
    closeDelay: 50,
    ...(options.actionTimeout === undefined ? {} : { actionTimeout: options.actionTimeout }),
  });
  return subscribeHarness(channel, Socket, options.connect ?? true);
}

export function listHarness(): Harness<JobListChannel> {
  const Socket = socketClass();
  const channel = new JobListChannel('secret', {
    WebSocket: Socket,
    baseURL: 'ws://test/',
    reconnect: { initialDelay: 100, maxDelay: 1000, jitter: 0 },
    closeDelay: 50,
  });
  return subscribeHarness(channel, Socket, true);
}

function subscribeHarness<C extends ContextChannel<unknown, unknown>>(channel: C, Socket: FakeSocketClass, connect: boolean): Harness<C> {
  let count = 0;
  const unsubscribe = channel.subscribe(() => {
    count += 1;
  });
  const harness = { channel, Socket, socket: () => Socket.last(), unsubscribe, notified: () => count };
  if (connect) {
    Socket.last().open();
    Socket.last().receive(auth());
  }
  return harness;
}

/** Send initialAnchors, the records and the end marker. */
export function loadJob(socket: FakeSocket, records: InstanceRecord[] = jobRecords(), tstamp = 1): void {
  socket.receive(anchors(1));
  socket.receive(records);
  socket.receive([end(tstamp)]);
}
