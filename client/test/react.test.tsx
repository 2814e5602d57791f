// @vitest-environment jsdom
import { StrictMode, useState, type ReactElement } from 'react';
import { act, cleanup, render, screen, waitFor } from '@testing-library/react';
import { afterEach, describe, expect, it } from 'vitest';
import { useChannel, useChannelEvent, useChannelState, useInstance, type NotificationRecord } from '@rxdjango/react';
import { JobChannel } from './fixtures/jobs.channels';
import type { TaskType } from './fixtures/jobs.interfaces';
import { socketClass, type FakeSocketClass } from './support/fakeSocket';
import { loadJob } from './support/channel';
import { TASK, auth, del, update } from './support/records';

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
