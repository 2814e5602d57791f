import { useEffect } from 'react';
import { useChannel, useChannelState } from '@rxdjango/react';
import { MyBoardsChannel } from './rx/board.channels';
import type { BoardSummaryType } from './rx/board.interfaces';
import { useReportConnectionError } from './errors';
import { boardHref } from './route';
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
          You are not a member of any board yet. A board you are added to shows up here at once.
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
    </section>
  );
}
