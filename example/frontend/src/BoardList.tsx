import { useEffect, useState, type FormEvent } from 'react';
import { useChannel, useChannelState } from '@rxdjango/react';
import { MyBoardsChannel } from './rx/board.channels';
import type { BoardSummaryType } from './rx/board.interfaces';
import { useReportConnectionError } from './errors';
import { useRun } from './operations';
import { boardHref, navigate } from './route';
import { StatusBadge } from './StatusBadge';

/** The user's boards, from `MyBoardsChannel`: a board created for the user appears live. */
export function BoardList({ token, onUnauthorized }: { token: string; onUnauthorized: () => void }) {
  const channel = useChannel(() => new MyBoardsChannel(token), [token]);
  const { state, connectionStatus, ready, error } = useChannelState(channel);
  const boards: readonly BoardSummaryType[] = state;

  useReportConnectionError('Board list', connectionStatus, error);
  useEffect(() => {
    if (connectionStatus === 'unauthorized') onUnauthorized();
  }, [connectionStatus, onUnauthorized]);

  return (
    <section className="board-list" data-testid="board-list">
      <div className="section-head">
        <h2>Your boards</h2>
        <StatusBadge status={connectionStatus} testId="board-list-status" />
      </div>
      {!ready ? (
        <p className="muted">{error ? 'The boards cannot be loaded.' : 'Loading boards…'}</p>
      ) : boards.length === 0 ? (
        <p className="muted" data-testid="no-boards">
          You are not a member of any board yet: create one, or ask a board's owner to add you.
        </p>
      ) : (
        <ul className="board-grid">
          {boards.map((board) => (
            <li key={board.id}>
              <a className="board-tile" href={boardHref(board.id)} data-testid={`board-link-${board.id}`}>
                {board.name}
              </a>
            </li>
          ))}
        </ul>
      )}
      <NewBoard channel={channel} />
    </section>
  );
}

/** Create a board (the `create_board` action) and open it. */
function NewBoard({ channel }: { channel: MyBoardsChannel }) {
  const run = useRun();
  const [name, setName] = useState('');
  const [busy, setBusy] = useState(false);

  const create = async (event: FormEvent<HTMLFormElement>) => {
    event.preventDefault();
    if (!name.trim() || busy) return;
    setBusy(true);
    const boardId = await run('Could not create the board', channel.createBoard(name.trim()));
    setBusy(false);
    if (boardId === undefined) return;
    setName('');
    navigate(boardHref(boardId));
  };

  return (
    <form className="inline-form new-board" onSubmit={create}>
      <input
        data-testid="new-board-name"
        aria-label="New board name"
        placeholder="New board name…"
        value={name}
        onChange={(e) => setName(e.target.value)}
      />
      <button type="submit" className="primary" data-testid="create-board" disabled={busy}>
        {busy ? 'Creating…' : 'Create board'}
      </button>
    </form>
  );
}
