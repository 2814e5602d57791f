import { useMemo, useState } from 'react';
import type { BoardChannel } from './rx/board.channels';
import type { ColumnType } from './rx/board.interfaces';
import { CardView } from './CardView';

export interface MoveTargets {
  readonly left: ColumnType | null;
  readonly right: ColumnType | null;
}

export function ColumnView({
  channel,
  column,
  targets,
  username,
  onArchive,
  onMove,
}: {
  channel: BoardChannel;
  column: ColumnType;
  targets: MoveTargets;
  username: string;
  onArchive: (column: ColumnType) => Promise<void>;
  onMove: (cardId: number, columnId: number) => void;
}) {
  const [archiving, setArchiving] = useState(false);
  const cards = useMemo(
    () => [...column.cards].sort((a, b) => a.position - b.position || a.id - b.id),
    [column.cards],
  );

  return (
    <section
      className={column.archived ? 'column archived' : 'column'}
      data-testid={`column-${column.id}`}
      data-archived={column.archived ? 'true' : 'false'}
      aria-disabled={column.archived}
    >
      <header className="column-head">
        <h3 data-testid={`column-title-${column.id}`}>{column.title}</h3>
        <span className="count">{cards.length}</span>
        {column.archived ? (
          <span className="tag" data-testid={`column-archived-${column.id}`}>
            Archived
          </span>
        ) : (
          <button
            type="button"
            className="ghost small"
            data-testid={`archive-column-${column.id}`}
            disabled={archiving}
            onClick={() => {
              setArchiving(true);
              // The column greys out when the server's update arrives.
              void onArchive(column).finally(() => setArchiving(false));
            }}
          >
            Archive
          </button>
        )}
      </header>
      <ul className="cards">
        {cards.map((card) => (
          <CardView
            key={card.id}
            channel={channel}
            card={card}
            left={targets.left}
            right={targets.right}
            username={username}
            onMove={onMove}
          />
        ))}
      </ul>
      {cards.length === 0 && <p className="empty muted">No cards</p>}
    </section>
  );
}
