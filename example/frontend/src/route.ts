/** Hash routing: `#/` is the list of boards, `#/board/<id>` one board (reloads keep it). */

import { useMemo, useSyncExternalStore } from 'react';

export type Route =
  | { readonly name: 'boards' }
  | { readonly name: 'board'; readonly boardId: number }
  | { readonly name: 'not-found' };

export const boardsHref = '#/';

export function boardHref(boardId: number): string {
  return `#/board/${boardId}`;
}

export function parseRoute(hash: string): Route {
  if (hash === '' || hash === '#' || hash === boardsHref) return { name: 'boards' };
  const match = /^#\/board\/(\d+)\/?$/.exec(hash);
  return match ? { name: 'board', boardId: Number(match[1]) } : { name: 'not-found' };
}

function subscribe(onChange: () => void): () => void {
  window.addEventListener('hashchange', onChange);
  return () => window.removeEventListener('hashchange', onChange);
}

const getHash = (): string => window.location.hash;

export function useRoute(): Route {
  const hash = useSyncExternalStore(subscribe, getHash, getHash);
  return useMemo(() => parseRoute(hash), [hash]);
}

export function navigate(href: string): void {
  if (window.location.hash !== href) window.location.hash = href;
}
