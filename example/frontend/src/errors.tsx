/**
 * Errors never crash the page: they are reported to one banner
 * (`data-testid="error-banner"`) at the top of the app.
 */

import { Component, createContext, useContext, useEffect, useRef, type ErrorInfo, type ReactNode } from 'react';
import { RxDjangoError, type ConnectionError, type ConnectionStatus } from '@rxdjango/react';

export interface ReportedError {
  readonly id: number;
  readonly message: string;
}

export type ReportError = (message: string) => void;

const ReportContext = createContext<ReportError>((message) => console.error(message));

export const ErrorReporter = ReportContext.Provider;

/** The function that adds a message to the error banner. */
export function useReportError(): ReportError {
  return useContext(ReportContext);
}

/** DRF validation detail (`{"text": ["This field may not be blank."]}`) as one line. */
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

/** A thrown value as text: the server's message and code for the library's errors. */
export function describeError(error: unknown): string {
  if (error instanceof RxDjangoError) {
    const detail = 'detail' in error ? describeDetail((error as { detail?: unknown }).detail) : '';
    return `${error.message} (${error.code})${detail ? ` — ${detail}` : ''}`;
  }
  if (error instanceof Error) return error.message;
  return String(error);
}

/** Report a channel's terminal connection error once per change (unauthorized is the caller's). */
export function useReportConnectionError(
  what: string,
  status: ConnectionStatus,
  error: ConnectionError | null,
): void {
  const report = useReportError();
  const last = useRef<ConnectionError | null>(null);
  useEffect(() => {
    if (error === null || error === last.current) return;
    last.current = error;
    if (status !== 'unauthorized') report(`${what}: ${status} — ${error.message} (${error.code})`);
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
