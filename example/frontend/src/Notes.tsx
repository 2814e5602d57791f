import { useState, type FormEvent } from 'react';
import { isTemporaryId } from '@rxdjango/react';
import type { BoardChannel } from './rx/board.channels';
import type { NoteType } from './rx/board.interfaces';
import { recordKey, usePending, useRun } from './operations';

const BOARD = 'board.serializers.BoardSerializer';
const NOTE = 'board.serializers.NoteSerializer';

/** The user's private notes on the board (`user_key`: nobody else receives them). */
export function Notes({ channel, boardId, notes }: { channel: BoardChannel; boardId: number; notes: readonly NoteType[] }) {
  const run = useRun();
  const [text, setText] = useState('');

  const add = (event: FormEvent<HTMLFormElement>) => {
    event.preventDefault();
    const value = text.trim();
    if (!value) return;
    setText('');
    void run('Could not add the note', channel.create(BOARD, boardId, 'notes', { text: value })).then((id) => {
      if (id === undefined) setText((current) => current || value);
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
  const run = useRun();
  const [editing, setEditing] = useState(false);
  const [draft, setDraft] = useState('');
  const creating = isTemporaryId(note.id);
  const pending = usePending(recordKey(NOTE, note.id)) || creating;

  const save = (event: FormEvent<HTMLFormElement>) => {
    event.preventDefault();
    setEditing(false);
    if (draft === note.text) return;
    void run('Could not save the note', channel.save(NOTE, note.id, { text: draft }), recordKey(NOTE, note.id));
  };

  const remove = () => {
    void run('Could not delete the note', channel.delete(NOTE, note.id));
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
    <li
      className={pending ? 'note pending' : 'note'}
      data-testid={`note-${note.id}`}
      data-pending={pending ? 'true' : undefined}
    >
      <span className="note-text" data-testid={`note-text-${note.id}`}>
        {note.text}
      </span>
      <span className="row">
        {pending && <span className="saving">saving…</span>}
        <button
          type="button"
          className="ghost small"
          data-testid={`edit-note-${note.id}`}
          disabled={creating}
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
          disabled={creating}
          onClick={remove}
        >
          Delete
        </button>
      </span>
    </li>
  );
}
