// @vitest-environment jsdom
import { StrictMode, useState, type ReactElement } from 'react';
import { act, cleanup, render, screen, waitFor } from '@testing-library/react';
import { afterEach, describe, expect, it } from 'vitest';
import {
  useChannel,
  useChannelEvent,
  useChannelInstance,
  useChannelState,
  useInstance,
  type NotificationRecord,
} from '@rxdjango/react';
import { JobChannel, JobListChannel } from './fixtures/jobs.channels';
import type { JobType, TaskType } from './fixtures/jobs.interfaces';
import { socketClass, type FakeSocketClass } from './support/fakeSocket';
import { loadJob } from './support/channel';
import { JOB, TASK, anchors, auth, create, del, update } from './support/records';

afterEach(cleanup);

function newChannel(Socket: FakeSocketClass = socketClass()): JobChannel {
  return new JobChannel(1, 'secret', { WebSocket: Socket, closeDelay: 10 });
}

function JobView({ channel }: { channel: JobChannel }): ReactElement {
  const { state, connectionStatus, runtimeState } = useChannelState(channel);
  return (
    <div>
      <p data-testid="status">{connectionStatus}</p>
      <p data-testid="counter">{runtimeState.counter}</p>
      <ul>
        {state?.tasks.map((t) => (
          <li key={t.id}>{t.title}</li>
        ))}
      </ul>
    </div>
  );
}

describe('useChannelState', () => {
  it('renders the state and follows updates', () => {
    const Socket = socketClass();
    const channel = newChannel(Socket);
    render(<JobView channel={channel} />);
    expect(screen.getByTestId('status').textContent).toBe('connecting');
    act(() => {
      Socket.last().open();
      Socket.last().receive(auth());
      loadJob(Socket.last());
    });
    expect(screen.getAllByRole('listitem').map((li) => li.textContent)).toEqual(['A', 'B']);
    act(() => {
      Socket.last().receive([update(TASK, 11, { title: 'B2' })]);
      Socket.last().receive({ type: 'runtimeVar', var: 'counter', value: 5 });
    });
    expect(screen.getAllByRole('listitem').map((li) => li.textContent)).toEqual(['A', 'B2']);
    expect(screen.getByTestId('counter').textContent).toBe('5');
    expect(screen.getByTestId('status').textContent).toBe('connected');
  });

  it('opens exactly one socket under StrictMode and keeps it open', async () => {
    const Socket = socketClass();
    const channel = newChannel(Socket);
    render(
      <StrictMode>
        <JobView channel={channel} />
      </StrictMode>,
    );
    await new Promise((resolve) => setTimeout(resolve, 30));
    expect(Socket.instances).toHaveLength(1);
    expect(Socket.live()).toHaveLength(1);
    act(() => {
      Socket.last().open();
      Socket.last().receive(auth());
      loadJob(Socket.last());
    });
    expect(screen.getByTestId('status').textContent).toBe('connected');
    expect(screen.getAllByRole('listitem')).toHaveLength(2);
  });

  it('creates the channel once with useChannel, even in StrictMode', async () => {
    const Socket = socketClass();
    function App(): ReactElement {
      const channel = useChannel(() => newChannel(Socket), []);
      return <JobView channel={channel} />;
    }
    render(
      <StrictMode>
        <App />
      </StrictMode>,
    );
    await new Promise((resolve) => setTimeout(resolve, 30));
    expect(Socket.instances).toHaveLength(1);
    expect(Socket.live()).toHaveLength(1);
  });

  it('closes the socket after the last component unmounts', async () => {
    const Socket = socketClass();
    const channel = newChannel(Socket);
    const { unmount } = render(<JobView channel={channel} />);
    unmount();
    await waitFor(() => expect(Socket.last().closedWith?.code).toBe(1000));
    expect(channel.status).toBe('closed');
  });

  it('returns an idle snapshot for a null channel', () => {
    function NoChannel(): ReactElement {
      const { connectionStatus, state } = useChannelState<TaskType, unknown>(null);
      return <p>{`${connectionStatus}:${String(state)}`}</p>;
    }
    render(<NoChannel />);
    expect(screen.getByText('idle:undefined')).toBeTruthy();
  });
});

describe("useChannelState: the original client's fields", () => {
  function Fields({ channel }: { channel: JobChannel | JobListChannel | null }): ReactElement {
    const { connected, noConnectionSince, no_connection_since, empty, state } = useChannelState<unknown, unknown>(channel);
    return (
      <div>
        <p data-testid="connected">{String(connected)}</p>
        <p data-testid="since">{noConnectionSince === undefined ? 'none' : noConnectionSince.toISOString()}</p>
        <p data-testid="same">{String(no_connection_since === noConnectionSince)}</p>
        <p data-testid="empty">{String(empty)}</p>
        <p data-testid="count">{Array.isArray(state) ? state.length : state === undefined ? '-' : 'one'}</p>
      </div>
    );
  }
  const text = (id: string): string | null => screen.getByTestId(id).textContent;

  it('connected and noConnectionSince follow a drop and a reconnect', async () => {
    const Socket = socketClass();
    const channel = new JobChannel(1, 'secret', { WebSocket: Socket, closeDelay: 10, reconnect: { initialDelay: 5, jitter: 0 } });
    render(<Fields channel={channel} />);
    expect([text('connected'), text('since')]).toEqual(['false', 'none']);
    act(() => {
      Socket.last().open();
      Socket.last().receive(auth());
      loadJob(Socket.last());
    });
    expect([text('connected'), text('since'), text('empty'), text('count')]).toEqual(['true', 'none', 'false', 'one']);
    const before = Date.now();
    act(() => Socket.last().serverClose(1006));
    expect(text('connected')).toBe('false');
    const since = Date.parse(text('since') ?? '');
    expect(since).toBeGreaterThanOrEqual(before);
    expect(since).toBeLessThanOrEqual(Date.now());
    expect(text('same')).toBe('true');
    await waitFor(() => expect(Socket.instances).toHaveLength(2));
    act(() => {
      Socket.last().open();
      Socket.last().receive(auth());
    });
    expect([text('connected'), text('since'), text('same')]).toEqual(['true', 'none', 'true']);
  });

  it('empty is true for a list channel without anchors, false once one is added', () => {
    const Socket = socketClass();
    const channel = new JobListChannel('secret', { WebSocket: Socket, baseURL: 'ws://test/', closeDelay: 10 });
    render(<Fields channel={channel} />);
    act(() => {
      Socket.last().open();
      Socket.last().receive(auth());
    });
    expect([text('connected'), text('empty')]).toEqual(['true', 'false']); // no initial state yet
    act(() => Socket.last().receive(anchors()));
    expect([text('empty'), text('count')]).toEqual(['true', '0']);
    act(() => {
      Socket.last().receive({ type: 'prependAnchor', anchorId: 2 });
      Socket.last().receive([create(JOB, 2, { name: 'new', tasks: [], spec: null })]);
    });
    expect([text('empty'), text('count')]).toEqual(['false', '1']);
  });

  it('idle values without a channel', () => {
    render(<Fields channel={null} />);
    expect([text('connected'), text('since'), text('empty')]).toEqual(['false', 'none', 'false']);
  });
});

describe('useChannelInstance', () => {
  it('returns null without a channel or an id, else the instance once available', () => {
    const Socket = socketClass();
    const channel = newChannel(Socket);
    function TaskView({ id, withChannel = true }: { id: number | null; withChannel?: boolean }): ReactElement {
      // The original's type parameters: <channel state, instance>.
      const task = useChannelInstance<JobType, TaskType>(withChannel ? channel : null, TASK, id);
      useChannelState(channel);
      return <p data-testid="task">{task === null ? 'null' : task === undefined ? 'undefined' : task.title}</p>;
    }
    const { rerender } = render(<TaskView id={null} />);
    expect(screen.getByTestId('task').textContent).toBe('null');
    rerender(<TaskView id={11} />);
    expect(screen.getByTestId('task').textContent).toBe('undefined');
    act(() => {
      Socket.last().open();
      Socket.last().receive(auth());
      loadJob(Socket.last());
    });
    expect(screen.getByTestId('task').textContent).toBe('B');
    rerender(<TaskView id={11} withChannel={false} />);
    expect(screen.getByTestId('task').textContent).toBe('null');
    rerender(<TaskView id={null} />);
    expect(screen.getByTestId('task').textContent).toBe('null');
  });

  it('takes one type parameter like useInstance', () => {
    const Socket = socketClass();
    const channel = newChannel(Socket);
    function Title(): ReactElement {
      const task = useChannelInstance<TaskType>(channel, TASK, 10);
      return <p data-testid="title">{task?.title ?? String(task)}</p>;
    }
    render(<Title />);
    act(() => {
      Socket.last().open();
      Socket.last().receive(auth());
      loadJob(Socket.last());
    });
    expect(screen.getByTestId('title').textContent).toBe('A');
  });
});

describe('useInstance', () => {
  it('renders one instance and re-renders only when it changes', () => {
    const Socket = socketClass();
    const channel = newChannel(Socket);
    let renders = 0;
    function TaskView({ id }: { id: number }): ReactElement {
      const task = useInstance<TaskType>(channel, TASK, id);
      renders += 1;
      return <p data-testid="task">{task === undefined ? 'gone' : `${task.title}/${task.labels.length}`}</p>;
    }
    render(<TaskView id={11} />);
    expect(screen.getByTestId('task').textContent).toBe('gone');
    act(() => {
      Socket.last().open();
      Socket.last().receive(auth());
      loadJob(Socket.last());
    });
    expect(screen.getByTestId('task').textContent).toBe('B/1');
    const afterLoad = renders;
    act(() => Socket.last().receive([update(TASK, 10, { title: 'other task' })]));
    expect(renders).toBe(afterLoad);
    act(() => Socket.last().receive([update(TASK, 11, { title: 'mine' })]));
    expect(screen.getByTestId('task').textContent).toBe('mine/1');
    act(() => Socket.last().receive([del(TASK, 11)]));
    expect(screen.getByTestId('task').textContent).toBe('gone');
  });
});

describe('useChannelEvent', () => {
  it('delivers notifications to the latest listener', () => {
    const Socket = socketClass();
    const channel = newChannel(Socket);
    function Toasts(): ReactElement {
      const [last, setLast] = useState('none');
      useChannelState(channel);
      useChannelEvent(channel, 'notification', (n: NotificationRecord) => setLast(String(n.text)));
      return <p data-testid="toast">{last}</p>;
    }
    render(<Toasts />);
    act(() => {
      Socket.last().open();
      Socket.last().receive(auth());
      Socket.last().receive([{ _instance_type: '_notification', _tstamp: 1, _operation: 'create', id: 0, text: 'saved' }]);
    });
    expect(screen.getByTestId('toast').textContent).toBe('saved');
  });
});
