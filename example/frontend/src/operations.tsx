/**
 * Every write or action the user starts goes through `run`, so that they all
 * behave alike:
 * - while it waits for the server (offline: until the connection is back),
 *   its record is pending, and shows "saving…" instead of looking saved;
 * - a refusal goes to the error banner with the server's reason;
 * - a success empties the banner: what went wrong before is no longer news.
 */

import { createContext, useCallback, useContext, useState, type ReactNode } from 'react';
import { describeError, useErrors } from './errors';

/** Run `work`; resolves with its result, or `undefined` once its failure is reported. */
export type Run = <T>(failure: string, work: Promise<T>, pendingKey?: string) => Promise<T | undefined>;

const RunContext = createContext<Run>((_failure, work) => work);
const PendingContext = createContext<ReadonlyMap<string, number>>(new Map());

/** The key under which a record's pending writes are counted. */
export function recordKey(instanceType: string, id: unknown): string {
  return `${instanceType}:${String(id)}`;
}

export function OperationsProvider({ children }: { children: ReactNode }) {
  const { report, clear } = useErrors();
  // Writes in flight per record key (two quick edits of one card count twice).
  const [pending, setPending] = useState<ReadonlyMap<string, number>>(() => new Map());

  const count = useCallback((key: string, delta: number) => {
    setPending((previous) => {
      const next = new Map(previous);
      const value = (next.get(key) ?? 0) + delta;
      if (value > 0) next.set(key, value);
      else next.delete(key);
      return next;
    });
  }, []);

  const run = useCallback<Run>(
    async (failure, work, pendingKey) => {
      if (pendingKey !== undefined) count(pendingKey, 1);
      try {
        const result = await work;
        clear();
        return result;
      } catch (error) {
        report(`${failure}: ${describeError(error)}`);
        return undefined;
      } finally {
        if (pendingKey !== undefined) count(pendingKey, -1);
      }
    },
    [clear, count, report],
  );

  return (
    <RunContext.Provider value={run}>
      <PendingContext.Provider value={pending}>{children}</PendingContext.Provider>
    </RunContext.Provider>
  );
}

export function useRun(): Run {
  return useContext(RunContext);
}

/** Whether a write on this record is still waiting for the server. */
export function usePending(key: string): boolean {
  return useContext(PendingContext).has(key);
}
