/**
 * React binding: thin hooks over `useSyncExternalStore`. The only module
 * of the package that imports React.
 *
 * Subscribing is what opens the channel's socket, and unsubscribing closes
 * it after `closeDelay`, so StrictMode's mount → unmount → mount keeps a
 * single socket.
 */

import { useCallback, useEffect, useMemo, useRef, useSyncExternalStore, type DependencyList } from 'react';
import type { ChannelEvents, ChannelSnapshot, ContextChannel } from './channel';
import type { Id } from './protocol';
import type { ChannelState } from './types';

const noop = (): void => {};

/** What `useChannelState(null)` returns: nothing connected yet. */
const IDLE_SNAPSHOT: ChannelSnapshot<undefined, undefined> = Object.freeze({
  state: undefined,
  connectionStatus: 'idle',
  runtimeState: undefined,
  error: null,
  ready: false,
  lastSystemMessage: null,
  notifications: Object.freeze([]),
  connected: false,
  noConnectionSince: undefined,
  no_connection_since: undefined,
  empty: false,
});

/**
 * Create a channel once per `deps` (e.g. `[jobId, token]`). Construction
 * has no side effect, so StrictMode's double render is harmless.
 */
export function useChannel<C extends ContextChannel<unknown, unknown>>(factory: () => C, deps: DependencyList): C {
  // The factory is meant to change with deps only, like useMemo's.
  // eslint-disable-next-line react-hooks/exhaustive-deps
  return useMemo(factory, deps);
}

/**
 * Subscribe to a channel: `{ state, connectionStatus, runtimeState, error,
 * ready, lastSystemMessage, notifications }`, plus the fields of the
 * original RxDjango client: `connected`, `noConnectionSince` (also spelled
 * `no_connection_since`) and `empty`. Re-renders only when the snapshot
 * changes; unchanged branches of `state` keep their identity.
 * Pass null while the channel cannot be made yet (no token).
 */
export function useChannelState<T, R>(channel: ContextChannel<T, R>): ChannelSnapshot<ChannelState<T>, R>;
export function useChannelState<T, R>(
  channel: ContextChannel<T, R> | null | undefined,
): ChannelSnapshot<ChannelState<T> | undefined, R | undefined>;
export function useChannelState<T, R>(
  channel: ContextChannel<T, R> | null | undefined,
): ChannelSnapshot<ChannelState<T> | undefined, R | undefined> {
  const subscribe = useCallback((onChange: () => void) => (channel ? channel.subscribe(onChange) : noop), [channel]);
  const getSnapshot = useCallback(
    (): ChannelSnapshot<ChannelState<T> | undefined, R | undefined> => (channel ? channel.getSnapshot() : IDLE_SNAPSHOT),
    [channel],
  );
  return useSyncExternalStore(subscribe, getSnapshot, getSnapshot);
}

/**
 * One instance of the channel's state by type and pk, references resolved;
 * undefined while absent. Re-renders only when that instance (or something
 * under it) changes.
 */
export function useInstance<I = Record<string, unknown>>(
  channel: ContextChannel<unknown, unknown> | null | undefined,
  instanceType: string,
  id: Id | null | undefined,
): I | undefined {
  const subscribe = useCallback((onChange: () => void) => (channel ? channel.subscribe(onChange) : noop), [channel]);
  const getSnapshot = useCallback(
    () => (channel && id !== null && id !== undefined ? channel.getInstance<I>(instanceType, id) : undefined),
    [channel, instanceType, id],
  );
  return useSyncExternalStore(subscribe, getSnapshot, getSnapshot);
}

/**
 * `useInstance` as the original RxDjango client's `useChannelInstance`:
 * null while there is no channel or no id (null or undefined), else the
 * instance, undefined until it is available. Same arguments as `useInstance`.
 */
export function useChannelInstance<I = Record<string, unknown>>(
  channel: ContextChannel<unknown, unknown> | null | undefined,
  instanceType: string,
  instanceId: Id | null | undefined,
): I | null | undefined;
/** The original's type parameters: `useChannelInstance<ChannelStateType, InstanceType>(...)`. */
export function useChannelInstance<T, I>(
  channel: ContextChannel<T, unknown> | null | undefined,
  instanceType: string,
  instanceId: Id | null | undefined,
): I | null | undefined;
export function useChannelInstance<I>(
  channel: ContextChannel<unknown, unknown> | null | undefined,
  instanceType: string,
  instanceId: Id | null | undefined,
): I | null | undefined {
  const instance = useInstance<I>(channel, instanceType, instanceId);
  return channel && instanceId !== null && instanceId !== undefined ? instance : null;
}

/** Run `listener` for each `event` of the channel (e.g. `notification`). The latest listener is used. */
export function useChannelEvent<K extends keyof ChannelEvents>(
  channel: ContextChannel<unknown, unknown> | null | undefined,
  event: K,
  listener: (payload: ChannelEvents[K]) => void,
): void {
  const latest = useRef(listener);
  useEffect(() => {
    latest.current = listener;
  });
  useEffect(() => (channel ? channel.on(event, (payload) => latest.current(payload)) : undefined), [channel, event]);
}
