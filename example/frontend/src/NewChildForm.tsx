import { useState, type FormEvent } from 'react';
import type { BoardChannel } from './rx/board.channels';
import { useRun } from './operations';

interface NewChildProps {
  channel: BoardChannel;
  /** The parent's instance type, its id, and the relation the child joins. */
  parentType: string;
  parentId: number;
  relation: 'columns' | 'cards';
  /** What is created, for the error banner ("Could not add the card"). */
  what: string;
  className: string;
  label: string;
  placeholder: string;
  button: string;
  inputTestId: string;
  buttonTestId: string;
}

/**
 * A one-field form that creates a child (a column, a card) with a title. The create is
 * optimistic: the child shows at once, marked pending; if the server refuses, the
 * banner says why and the typed title comes back.
 */
export function NewChildForm(props: NewChildProps) {
  const { channel, parentType, parentId, relation, what } = props;
  const run = useRun();
  const [title, setTitle] = useState('');

  const add = (event: FormEvent<HTMLFormElement>) => {
    event.preventDefault();
    const value = title.trim();
    if (!value) return;
    setTitle('');
    void run(`Could not add the ${what}`, channel.create(parentType, parentId, relation, { title: value })).then((id) => {
      if (id === undefined) setTitle((current) => current || value);
    });
  };

  return (
    <form className={props.className} onSubmit={add}>
      <input
        data-testid={props.inputTestId}
        aria-label={props.label}
        placeholder={props.placeholder}
        value={title}
        onChange={(e) => setTitle(e.target.value)}
      />
      <button type="submit" className="small" data-testid={props.buttonTestId}>
        {props.button}
      </button>
    </form>
  );
}
