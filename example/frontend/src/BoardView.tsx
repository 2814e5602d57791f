import { useEffect, useMemo, useRef, useState, type FormEvent } from 'react';
import { isTemporaryId, useChannel, useChannelEvent, useChannelState, type NotificationRecord } from '@rxdjango/react';
import { BoardChannel } from './rx/board.channels';
import type { BoardType, ColumnType } from './rx/board.interfaces';
import { useErrors, useReportConnectionError } from './errors';
import { NotFound } from './NotFound';
import { useRun } from './operations';
import { boardsHref } from './route';
import { StatusBadge } from './StatusBadge';
import { ColumnView, byPosition, type MoveTargets } from './ColumnView';
import { NewChildForm } from './NewChildForm';
import { Notes } from './Notes';

export const BOARD = 'board.serializers.BoardSerializer';

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

/** A column cards can move to: not archived, and created on the server already. */
const acceptsCards = (column: ColumnType): boolean => !column.archived && !isTemporaryId(column.id);

/** For each column (in order), the nearest column on each side that accepts cards. */
function moveTargets(columns: readonly ColumnType[]): MoveTargets[] {
  return columns.map((_, index) => {
    let left: ColumnType | null = null;
    let right: ColumnType | null = null;
    for (let i = index - 1; i >= 0 && left === null; i--) if (acceptsCards(columns[i]!)) left = columns[i]!;
    for (let i = index + 1; i < columns.length && right === null; i++) if (acceptsCards(columns[i]!)) right = columns[i]!;
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
  const { report } = useErrors();
  const run = useRun();

  const [activity, setActivity] = useState<readonly ActivityLine[]>([]);
  const seq = useRef(0);
  const addActivity = (text: string) => {
    const line = { id: ++seq.current, time: new Date().toLocaleTimeString(), text };
    setActivity((previous) => [...previous, line].slice(-MAX_ACTIVITY));
  };
  useChannelEvent(channel, 'notification', (record) => addActivity(describeNotification(record)));
  useChannelEvent(channel, 'system', (message) => addActivity(`system: ${String(message.message)}`));
  useChannelEvent(channel, 'serverError', (body) => report(`Server error: ${body.message}`));

  useReportConnectionError('Board', connectionStatus, error);
  useEffect(() => {
    if (connectionStatus === 'unauthorized') onUnauthorized();
  }, [connectionStatus, onUnauthorized]);

  const columns = useMemo(() => (board ? [...board.columns].sort(byPosition) : []), [board]);
  const targets = useMemo(() => moveTargets(columns), [columns]);

  const archive = async (column: ColumnType): Promise<void> => {
    await run(`Could not archive “${column.title}”`, channel.archiveColumn(column.id));
  };

  const move = (cardId: number, columnId: number) => {
    void run('Could not move the card', channel.moveCard(cardId, columnId, 0));
  };

  // The channel refuses a missing board and one the user is not a member of alike.
  if (connectionStatus === 'forbidden' || connectionStatus === 'not-found') {
    return (
      <NotFound title="Board not found">
        There is no such board, or it is not shared with you: its owner can add you as a member.
      </NotFound>
    );
  }

  return (
    <section className="board" data-testid="board">
      <div className="board-head">
        <a className="back" href={boardsHref} data-testid="back-to-boards">
          ← All boards
        </a>
        <h2 data-testid="board-name">{board ? board.name : ready ? '' : `Board ${boardId}`}</h2>
        <StatusBadge status={connectionStatus} testId="connection-status" />
        {board && <Members channel={channel} board={board} username={username} />}
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
        <p className="muted board-loading">{error ? 'This board cannot be loaded.' : 'Loading the board…'}</p>
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
            <NewColumn channel={channel} boardId={board.id} />
          </div>
          <Notes channel={channel} boardId={board.id} notes={board.notes} />
        </div>
      )}
    </section>
  );
}

/** Who is on the board; its owner can add someone (the `add_member` action). */
function Members({ channel, board, username }: { channel: BoardChannel; board: BoardType; username: string }) {
  const run = useRun();
  const [name, setName] = useState('');
  const isOwner = board.owner?.username === username;

  const add = async (event: FormEvent<HTMLFormElement>) => {
    event.preventDefault();
    const value = name.trim();
    if (!value) return;
    const added = await run(`Could not add ${value}`, channel.addMember(value));
    if (added !== undefined) setName('');
  };

  return (
    <div className="members">
      <span className="muted" data-testid="members">
        Members:{' '}
        {board.members
          .map((member) => (member.id === board.owner?.id ? `${member.username} (owner)` : member.username))
          .join(', ')}
      </span>
      {isOwner && (
        <form className="inline-form" onSubmit={add}>
          <input
            data-testid="member-input"
            aria-label="Username to add"
            placeholder="Add a member by username…"
            value={name}
            onChange={(e) => setName(e.target.value)}
          />
          <button type="submit" className="small" data-testid="add-member">
            Add
          </button>
        </form>
      )}
    </div>
  );
}

/** A new column at the right end (an optimistic create: it shows at once, marked pending). */
function NewColumn({ channel, boardId }: { channel: BoardChannel; boardId: number }) {
  return (
    <NewChildForm
      channel={channel}
      parentType={BOARD}
      parentId={boardId}
      relation="columns"
      what="column"
      className="column new-column"
      label="New column title"
      placeholder="New column…"
      button="Add column"
      inputTestId="new-column-title"
      buttonTestId="add-column"
    />
  );
}
