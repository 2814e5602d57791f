/**
 * Errors never crash the page: they are reported to one banner
 * (`data-testid="error-banner"`) at the top of the app, in words meant for
 * the user — the reason the server gave, not a status code.
 */

import { Component, createContext, useContext, useEffect, useRef, type ErrorInfo, type ReactNode } from 'react';
import { RxDjangoError, type ConnectionError, type ConnectionStatus } from '@rxdjango/react';

export interface ReportedError {
  readonly id: number;
  readonly message: string;
}

export interface Errors {
  /** Add a message to the banner. */
  readonly report: (message: string) => void;
  /** Empty the banner (something worked since). */
  readonly clear: () => void;
}

const ErrorsContext = createContext<Errors>({ report: (message) => console.error(message), clear: () => {} });

export const ErrorReporter = ErrorsContext.Provider;

export function useErrors(): Errors {
  return useContext(ErrorsContext);
}

/** DRF validation detail (`{"title": ["This field may not be blank."]}`) as one line. */
function describeDetail(detail: unknown): string {
  if (detail === null || detail === undefined) return '';
  if (typeof detail === 'string') return detail;
  if (Array.isArray(detail)) return detail.map(describeDetail).join(' ');
  if (typeof detail === 'object') {
    return Object.entries(detail as Record<string, unknown>)
      .map(([field, value]) => `${field}: ${describeDetail(value)}`)
      .join('; ');
  }
  return String(detail);
}

/**
 * A thrown value as a sentence for the user. For the library's errors that is
 * the server's own message (a channel's `WriteError("why")`, an action's
 * `ActionError("why")`), or the field errors of an invalid write.
 */
export function describeError(error: unknown): string {
  if (error instanceof RxDjangoError) {
    const detail = 'detail' in error ? describeDetail((error as { detail?: unknown }).detail) : '';
    return detail || error.message;
  }
  if (error instanceof Error) return error.message;
  return String(error);
}

/**
 * Report a connection that stopped for a reason the page does not show by
 * itself: `unauthorized` logs out, `forbidden` and `not-found` are pages.
 */
export function useReportConnectionError(what: string, status: ConnectionStatus, error: ConnectionError | null): void {
  const { report } = useErrors();
  const last = useRef<ConnectionError | null>(null);
  useEffect(() => {
    if (error === null || error === last.current) return;
    last.current = error;
    if (status === 'error') report(`${what}: ${error.message}`);
  }, [what, status, error, report]);
}

export function ErrorBanner({ errors, onDismiss }: { errors: readonly ReportedError[]; onDismiss: () => void }) {
  if (errors.length === 0) return null;
  return (
    <div className="error-banner" role="alert" data-testid="error-banner">
      <ul>
        {errors.map((error) => (
          <li key={error.id}>{error.message}</li>
        ))}
      </ul>
      <button type="button" className="ghost" data-testid="dismiss-errors" onClick={onDismiss}>
        Dismiss
      </button>
    </div>
  );
}

interface BoundaryState {
  readonly error: unknown;
}

/** Last resort: a render error shows the banner instead of a blank page. */
export class ErrorBoundary extends Component<{ children: ReactNode }, BoundaryState> {
  override state: BoundaryState = { error: null };

  static getDerivedStateFromError(error: unknown): BoundaryState {
    return { error };
  }

  override componentDidCatch(error: unknown, info: ErrorInfo): void {
    console.error('render error', error, info.componentStack);
  }

  override render(): ReactNode {
    if (this.state.error === null) return this.props.children;
    return (
      <div className="error-banner" role="alert" data-testid="error-banner">
        <p>Something went wrong: {describeError(this.state.error)}</p>
        <button type="button" className="ghost" onClick={() => this.setState({ error: null })}>
          Try again
        </button>
      </div>
    );
  }
}
