import type { ReactNode } from 'react';
import { boardsHref } from './route';

/** A page for what cannot be shown (a missing board, a wrong address), with the way back. */
export function NotFound({ title, children }: { title: string; children: ReactNode }) {
  return (
    <section className="not-found card-panel" data-testid="not-found">
      <h2>{title}</h2>
      <p className="muted">{children}</p>
      <a href={boardsHref} data-testid="back-to-boards">
        ← All boards
      </a>
    </section>
  );
}
