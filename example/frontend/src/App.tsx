import { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import { BoardList } from './BoardList';
import { BoardView } from './BoardView';
import { ErrorBanner, ErrorBoundary, ErrorReporter, describeError, type ReportedError } from './errors';
import { Login } from './Login';
import { NotFound } from './NotFound';
import { OperationsProvider } from './operations';
import { boardsHref, navigate, useRoute } from './route';
import { clearSession, loadSession, saveSession, type Session } from './session';

const MAX_ERRORS = 5;

export function App() {
  const [session, setSession] = useState<Session | null>(loadSession);
  const [loginNotice, setLoginNotice] = useState<string | null>(null);
  const [errors, setErrors] = useState<readonly ReportedError[]>([]);
  const errorSeq = useRef(0);
  const route = useRoute();

  const report = useCallback((message: string) => {
    const entry = { id: ++errorSeq.current, message };
    setErrors((previous) => [...previous, entry].slice(-MAX_ERRORS));
  }, []);
  const dismiss = useCallback(() => setErrors([]), []);
  const errorsApi = useMemo(() => ({ report, clear: dismiss }), [report, dismiss]);

  // A promise nobody caught still ends up in the banner, not only in the console.
  useEffect(() => {
    const onRejection = (event: PromiseRejectionEvent) => {
      event.preventDefault();
      report(describeError(event.reason));
    };
    window.addEventListener('unhandledrejection', onRejection);
    return () => window.removeEventListener('unhandledrejection', onRejection);
  }, [report]);

  // Errors belong to the screen they happened on.
  const routeKey = route.name === 'board' ? `board-${route.boardId}` : route.name;
  useEffect(() => setErrors([]), [routeKey]);

  const onLogin = useCallback((next: Session) => {
    saveSession(next);
    setLoginNotice(null);
    setErrors([]);
    setSession(next);
  }, []);

  const logout = useCallback((notice: string | null = null) => {
    clearSession();
    setSession(null);
    setErrors([]);
    setLoginNotice(notice);
    navigate(boardsHref);
  }, []);

  const onUnauthorized = useCallback(
    () => logout('The server did not accept your session: log in again.'),
    [logout],
  );

  if (session === null) return <Login onLogin={onLogin} notice={loginNotice} />;

  return (
    <ErrorReporter value={errorsApi}>
      <OperationsProvider>
        <div className="app">
          <header className="topbar">
            <a className="brand" href={boardsHref}>
              RxDjango board
            </a>
            <span className="user">
              Logged in as{' '}
              <strong data-testid="current-user">{session.username}</strong>
            </span>
            <button type="button" className="ghost" data-testid="logout" onClick={() => logout()}>
              Log out
            </button>
          </header>
          <ErrorBanner errors={errors} onDismiss={dismiss} />
          <main className="content">
            <ErrorBoundary key={`${routeKey}-${session.token}`}>
              {route.name === 'board' ? (
                <BoardView
                  key={route.boardId}
                  boardId={route.boardId}
                  token={session.token}
                  username={session.username}
                  onUnauthorized={onUnauthorized}
                />
              ) : route.name === 'boards' ? (
                <BoardList token={session.token} onUnauthorized={onUnauthorized} />
              ) : (
                <NotFound title="Page not found">There is nothing at this address.</NotFound>
              )}
            </ErrorBoundary>
          </main>
        </div>
      </OperationsProvider>
    </ErrorReporter>
  );
}
