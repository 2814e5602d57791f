import { useState, type FormEvent } from 'react';
import { isTemporaryId } from '@rxdjango/react';
import type { BoardChannel } from './rx/board.channels';
import type { CardType, ColumnType, CommentType, UserType } from './rx/board.interfaces';
import { recordKey, usePending, useRun } from './operations';

export const CARD = 'board.serializers.CardSerializer';
export const COMMENT = 'board.serializers.CommentSerializer';

export function CardView({
  channel,
  card,
  left,
  right,
  username,
  onMove,
}: {
  channel: BoardChannel;
  card: CardType;
  left: ColumnType | null;
  right: ColumnType | null;
  username: string;
  onMove: (cardId: number, columnId: number) => void;
}) {
  const run = useRun();
  const [editing, setEditing] = useState(false);
  const [draft, setDraft] = useState('');
  const key = recordKey(CARD, card.id);
  const creating = isTemporaryId(card.id);
  const saving = usePending(key) || creating;

  const startEditing = () => {
    setDraft(card.title);
    setEditing(true);
  };

  const save = (event: FormEvent<HTMLFormElement>) => {
    event.preventDefault();
    setEditing(false);
    if (draft === card.title) return;
    // Optimistic: the new title shows at once, marked "saving…"; a refusal rolls it back.
    void run(`Could not rename “${card.title}”`, channel.save(CARD, card.id, { title: draft }), key);
  };

  return (
    <li
      className={saving ? 'card pending' : 'card'}
      data-testid={`card-${card.id}`}
      data-pending={saving ? 'true' : undefined}
    >
      {editing ? (
        <form className="card-edit" onSubmit={save}>
          <input
            data-testid={`card-title-input-${card.id}`}
            aria-label="Card title"
            value={draft}
            autoFocus
            onChange={(e) => setDraft(e.target.value)}
            onKeyDown={(e) => {
              if (e.key === 'Escape') setEditing(false);
            }}
          />
          <div className="row">
            <button type="submit" className="primary small" data-testid={`save-card-${card.id}`}>
              Save
            </button>
            <button
              type="button"
              className="ghost small"
              data-testid={`cancel-edit-${card.id}`}
              onClick={() => setEditing(false)}
            >
              Cancel
            </button>
          </div>
        </form>
      ) : (
        <div className="card-head">
          <span className="card-title" data-testid={`card-title-${card.id}`}>
            {card.title}
          </span>
          {saving && (
            <span className="saving" data-testid={`card-saving-${card.id}`}>
              saving…
            </span>
          )}
          <button
            type="button"
            className="ghost small"
            data-testid={`edit-card-${card.id}`}
            disabled={creating}
            aria-label={`Edit “${card.title}”`}
            onClick={startEditing}
          >
            Edit
          </button>
        </div>
      )}
      <div className="card-meta">
        {card.assignee ? (
          <span className="assignee" data-testid={`card-assignee-${card.id}`}>
            @{card.assignee.username}
          </span>
        ) : (
          <span />
        )}
        <span className="moves">
          <button
            type="button"
            className="ghost small"
            data-testid={`move-left-${card.id}`}
            disabled={left === null || creating}
            title={left ? `Move to ${left.title}` : 'No column on the left'}
            aria-label={left ? `Move to ${left.title}` : 'Move left'}
            onClick={() => left && onMove(card.id, left.id)}
          >
            ←
          </button>
          <button
            type="button"
            className="ghost small"
            data-testid={`move-right-${card.id}`}
            disabled={right === null || creating}
            title={right ? `Move to ${right.title}` : 'No column on the right'}
            aria-label={right ? `Move to ${right.title}` : 'Move right'}
            onClick={() => right && onMove(card.id, right.id)}
          >
            →
          </button>
        </span>
      </div>
      {!creating && <Comments channel={channel} cardId={card.id} comments={card.comments} username={username} />}
    </li>
  );
}

function Comments({
  channel,
  cardId,
  comments,
  username,
}: {
  channel: BoardChannel;
  cardId: number;
  comments: readonly CommentType[];
  username: string;
}) {
  const run = useRun();
  const [text, setText] = useState('');

  const add = (event: FormEvent<HTMLFormElement>) => {
    event.preventDefault();
    const value = text.trim();
    if (!value) return;
    setText('');
    // Optimistic: a temporary comment shows at once and gives way to the real one.
    void run('Could not add the comment', channel.create(CARD, cardId, 'comments', { text: value })).then((id) => {
      if (id === undefined) setText((current) => current || value);
    });
  };

  const remove = (comment: CommentType) => {
    void run(`Could not delete the comment “${comment.text}”`, channel.delete(COMMENT, comment.id));
  };

  return (
    <div className="comments">
      {comments.length > 0 && (
        <ul>
          {comments.map((comment) => {
            const pending = isTemporaryId(comment.id);
            // A comment being created has no author yet: it is the current user's.
            const author = (comment.author as UserType | undefined)?.username ?? username;
            return (
              <li
                key={comment.id}
                className={pending ? 'comment pending' : 'comment'}
                data-pending={pending ? 'true' : undefined}
                data-testid={`comment-${comment.id}`}
              >
                <span className="author">{author}</span>
                <span className="comment-text" data-testid={`comment-text-${comment.id}`}>
                  {comment.text}
                </span>
                <button
                  type="button"
                  className="ghost small danger"
                  data-testid={`delete-comment-${comment.id}`}
                  disabled={pending}
                  aria-label="Delete comment"
                  title={pending ? 'Saving…' : 'Delete comment'}
                  onClick={() => remove(comment)}
                >
                  ×
                </button>
              </li>
            );
          })}
        </ul>
      )}
      <form className="comment-form" onSubmit={add}>
        <input
          data-testid={`comment-input-${cardId}`}
          aria-label="New comment"
          placeholder="Add a comment…"
          value={text}
          onChange={(e) => setText(e.target.value)}
        />
        <button type="submit" className="small" data-testid={`add-comment-${cardId}`}>
          Add
        </button>
      </form>
    </div>
  );
}
