import { useEffect, useMemo, useRef, useState } from 'react';
import { useChannel, useChannelEvent, useChannelState, type NotificationRecord } from '@rxdjango/react';
import { BoardChannel } from './rx/board.channels';
import type { ColumnType } from './rx/board.interfaces';
import { describeError, useReportConnectionError, useReportError } from './errors';
import { boardsHref } from './route';
import { StatusBadge } from './StatusBadge';
import { ColumnView, type MoveTargets } from './ColumnView';
import { Notes } from './Notes';

interface ActivityLine {
  readonly id: number;
  readonly time: string;
  readonly text: string;
}

const MAX_ACTIVITY = 30;

/** A notification record as one line: `{kind: "joined", user}` → "bob joined". */
function describeNotification(record: NotificationRecord): string {
  const { kind, user } = record;
  if (kind === 'joined' && typeof user === 'string') return `${user} joined`;
  const fields = Object.fromEntries(Object.entries(record).filter(([key]) => !key.startsWith('_')));
  return typeof kind === 'string' ? `${kind}: ${JSON.stringify(fields)}` : JSON.stringify(fields);
}

function byPosition<T extends { position: number; id: number }>(a: T, b: T): number {
  return a.position - b.position || a.id - b.id;
}

/** For each column (in order), the nearest non-archived column on each side. */
function moveTargets(columns: readonly ColumnType[]): MoveTargets[] {
  return columns.map((_, index) => {
    let left: ColumnType | null = null;
    let right: ColumnType | null = null;
    for (let i = index - 1; i >= 0 && left === null; i--) if (!columns[i]!.archived) left = columns[i]!;
    for (let i = index + 1; i < columns.length && right === null; i++) if (!columns[i]!.archived) right = columns[i]!;
    return { left, right };
  });
}

export function BoardView({
  boardId,
  token,
  username,
  onUnauthorized,
}: {
  boardId: number;
  token: string;
  username: string;
  onUnauthorized: () => void;
}) {
  const channel = useChannel(() => new BoardChannel(boardId, token), [boardId, token]);
  const { state: board, connectionStatus, runtimeState, ready, error, lastSystemMessage } = useChannelState(channel);
  const report = useReportError();

  const [activity, setActivity] = useState<readonly ActivityLine[]>([]);
  const seq = useRef(0);
  const addActivity = (text: string) => {
    const line = { id: ++seq.current, time: new Date().toLocaleTimeString(), text };
    setActivity((previous) => [...previous, line].slice(-MAX_ACTIVITY));
  };
  useChannelEvent(channel, 'notification', (record) => addActivity(describeNotification(record)));
  useChannelEvent(channel, 'system', (message) => addActivity(`system: ${String(message.message)}`));
  useChannelEvent(channel, 'serverError', (body) => report(`Server error: ${body.message} (${body.code})`));

  useReportConnectionError('Board', connectionStatus, error);
  useEffect(() => {
    if (connectionStatus === 'unauthorized') onUnauthorized();
  }, [connectionStatus, onUnauthorized]);

  const columns = useMemo(() => (board ? [...board.columns].sort(byPosition) : []), [board]);
  const targets = useMemo(() => moveTargets(columns), [columns]);

  const archive = (column: ColumnType): Promise<void> =>
    channel.archiveColumn(column.id).then(
      () => undefined,
      (err: unknown) => report(`Could not archive “${column.title}”: ${describeError(err)}`),
    );

  const move = (cardId: number, columnId: number) => {
    channel.moveCard(cardId, columnId, 0).catch((err: unknown) => {
      report(`Could not move the card: ${describeError(err)}`);
    });
  };

  return (
    <section className="board" data-testid="board">
      <div className="board-head">
        <a className="back" href={boardsHref} data-testid="back-to-boards">
          ← All boards
        </a>
        <h2 data-testid="board-name">{board ? board.name : ready ? '' : `Board ${boardId}`}</h2>
        <StatusBadge status={connectionStatus} testId="connection-status" />
        {board && (
          <span className="members muted" data-testid="members">
            Members: {board.members.map((member) => member.username).join(', ')}
          </span>
        )}
      </div>

      <aside className="notifications" data-testid="notifications" aria-live="polite">
        <h3>
          Activity
          {runtimeState.viewers > 0 && (
            <span className="viewers" data-testid="viewers">
              {runtimeState.viewers} viewing
            </span>
          )}
        </h3>
        {lastSystemMessage && <p className="notice">{String(lastSystemMessage.message)}</p>}
        {activity.length === 0 ? (
          <p className="muted">Nobody else has joined since you opened the board.</p>
        ) : (
          <ul>
            {activity.map((line) => (
              <li key={line.id} data-testid="notification">
                <time>{line.time}</time> {line.text}
              </li>
            ))}
          </ul>
        )}
      </aside>

      {!board ? (
        <p className="muted board-loading">
          {error ? `This board is not available (${connectionStatus}).` : 'Loading the board…'}
        </p>
      ) : (
        <div className="board-body">
          <div className="columns">
            {columns.map((column, index) => (
              <ColumnView
                key={column.id}
                channel={channel}
                column={column}
                targets={targets[index]!}
                username={username}
                onArchive={archive}
                onMove={move}
              />
            ))}
            {columns.length === 0 && <p className="muted">This board has no columns.</p>}
          </div>
          <Notes channel={channel} boardId={board.id} notes={board.notes} />
        </div>
      )}
    </section>
  );
}
