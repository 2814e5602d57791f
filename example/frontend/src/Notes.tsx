import { useState, type FormEvent } from 'react';
import { isTemporaryId } from '@rxdjango/react';
import type { BoardChannel } from './rx/board.channels';
import type { NoteType } from './rx/board.interfaces';
import { describeError, useReportError } from './errors';

const BOARD = 'board.serializers.BoardSerializer';
const NOTE = 'board.serializers.NoteSerializer';

/** The user's private notes on the board (`user_key`: nobody else receives them). */
export function Notes({ channel, boardId, notes }: { channel: BoardChannel; boardId: number; notes: readonly NoteType[] }) {
  const report = useReportError();
  const [text, setText] = useState('');

  const add = (event: FormEvent<HTMLFormElement>) => {
    event.preventDefault();
    const value = text.trim();
    if (!value) return;
    setText('');
    channel.create(BOARD, boardId, 'notes', { text: value }).catch((err: unknown) => {
      report(`Could not add the note: ${describeError(err)}`);
      setText((current) => current || value);
    });
  };

  return (
    <aside className="notes" data-testid="notes">
      <h3>My notes</h3>
      <p className="muted small">Private: only you see them.</p>
      {notes.length === 0 ? (
        <p className="muted" data-testid="no-notes">
          No notes yet.
        </p>
      ) : (
        <ul>
          {notes.map((note) => (
            <NoteItem key={note.id} channel={channel} note={note} />
          ))}
        </ul>
      )}
      <form className="note-form" onSubmit={add}>
        <input
          data-testid="note-input"
          aria-label="New note"
          placeholder="Write a note…"
          value={text}
          onChange={(e) => setText(e.target.value)}
        />
        <button type="submit" className="primary small" data-testid="add-note">
          Add note
        </button>
      </form>
    </aside>
  );
}

function NoteItem({ channel, note }: { channel: BoardChannel; note: NoteType }) {
  const report = useReportError();
  const [editing, setEditing] = useState(false);
  const [draft, setDraft] = useState('');
  const pending = isTemporaryId(note.id);

  const save = (event: FormEvent<HTMLFormElement>) => {
    event.preventDefault();
    setEditing(false);
    if (draft === note.text) return;
    channel.save(NOTE, note.id, { text: draft }).catch((err: unknown) => {
      report(`Could not save the note: ${describeError(err)}`);
    });
  };

  const remove = () => {
    channel.delete(NOTE, note.id).catch((err: unknown) => {
      report(`Could not delete the note: ${describeError(err)}`);
    });
  };

  if (editing) {
    return (
      <li className="note" data-testid={`note-${note.id}`}>
        <form onSubmit={save}>
          <input
            data-testid={`note-edit-input-${note.id}`}
            aria-label="Note text"
            value={draft}
            autoFocus
            onChange={(e) => setDraft(e.target.value)}
            onKeyDown={(e) => {
              if (e.key === 'Escape') setEditing(false);
            }}
          />
          <div className="row">
            <button type="submit" className="primary small" data-testid={`save-note-${note.id}`}>
              Save
            </button>
            <button type="button" className="ghost small" onClick={() => setEditing(false)}>
              Cancel
            </button>
          </div>
        </form>
      </li>
    );
  }
  return (
    <li className={pending ? 'note pending' : 'note'} data-testid={`note-${note.id}`}>
      <span className="note-text" data-testid={`note-text-${note.id}`}>
        {note.text}
      </span>
      <span className="row">
        <button
          type="button"
          className="ghost small"
          data-testid={`edit-note-${note.id}`}
          disabled={pending}
          onClick={() => {
            setDraft(note.text);
            setEditing(true);
          }}
        >
          Edit
        </button>
        <button
          type="button"
          className="ghost small danger"
          data-testid={`delete-note-${note.id}`}
          disabled={pending}
          onClick={remove}
        >
          Delete
        </button>
      </span>
    </li>
  );
}
