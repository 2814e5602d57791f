import { useMemo, useState } from 'react';
import { isTemporaryId } from '@rxdjango/react';
import type { BoardChannel } from './rx/board.channels';
import type { ColumnType } from './rx/board.interfaces';
import { CardView } from './CardView';
import { NewChildForm } from './NewChildForm';

export const COLUMN = 'board.serializers.ColumnSerializer';

export interface MoveTargets {
  readonly left: ColumnType | null;
  readonly right: ColumnType | null;
}

/** Server order (position, then id); items still being created have neither: last, as made. */
export function byPosition<T extends { position: number; id: number }>(a: T, b: T): number {
  const aNew = isTemporaryId(a.id);
  const bNew = isTemporaryId(b.id);
  if (aNew || bNew) return Number(aNew) - Number(bNew);
  return a.position - b.position || a.id - b.id;
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
  const cards = useMemo(() => [...column.cards].sort(byPosition), [column.cards]);
  const creating = isTemporaryId(column.id);

  return (
    <section
      className={column.archived ? 'column archived' : creating ? 'column pending' : 'column'}
      data-testid={`column-${column.id}`}
      data-archived={column.archived ? 'true' : 'false'}
      data-pending={creating ? 'true' : undefined}
      aria-disabled={column.archived}
    >
      <header className="column-head">
        <h3 data-testid={`column-title-${column.id}`}>{column.title}</h3>
        <span className="count">{cards.length}</span>
        {creating ? (
          <span className="saving">saving…</span>
        ) : column.archived ? (
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
      {!column.archived && !creating && <NewCard channel={channel} columnId={column.id} />}
    </section>
  );
}

/** A new card at the bottom of the column (an optimistic create). */
function NewCard({ channel, columnId }: { channel: BoardChannel; columnId: number }) {
  return (
    <NewChildForm
      channel={channel}
      parentType={COLUMN}
      parentId={columnId}
      relation="cards"
      what="card"
      className="inline-form new-card"
      label="New card title"
      placeholder="Add a card…"
      button="Add"
      inputTestId={`new-card-title-${columnId}`}
      buttonTestId={`add-card-${columnId}`}
    />
  );
}
