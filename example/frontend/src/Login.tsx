import { useState, type FormEvent } from 'react';
import { login, type Session } from './session';

const DEMO_USERS = ['alice', 'bob', 'carol'] as const;
const DEMO_PASSWORD = 'demo';

export function Login({ onLogin, notice }: { onLogin: (session: Session) => void; notice: string | null }) {
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    if (busy) return;
    if (!username.trim() || !password) {
      setError('Enter a username and a password.');
      return;
    }
    setBusy(true);
    setError(null);
    try {
      onLogin(await login(username.trim(), password));
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
      setBusy(false);
    }
  }

  return (
    <main className="login-page">
      <form className="card-panel login" data-testid="login" onSubmit={submit} noValidate>
        <h1>RxDjango board</h1>
        <p className="muted">A team task board kept live over WebSockets.</p>
        {notice && (
          <p className="notice" data-testid="login-notice">
            {notice}
          </p>
        )}
        <label>
          Username
          <input
            data-testid="login-username"
            name="username"
            autoComplete="username"
            autoFocus
            value={username}
            onChange={(e) => setUsername(e.target.value)}
          />
        </label>
        <label>
          Password
          <input
            data-testid="login-password"
            name="password"
            type="password"
            autoComplete="current-password"
            value={password}
            onChange={(e) => setPassword(e.target.value)}
          />
        </label>
        {error && (
          <p className="login-error" role="alert" data-testid="login-error">
            {error}
          </p>
        )}
        <button type="submit" className="primary" data-testid="login-submit" disabled={busy}>
          {busy ? 'Logging in…' : 'Log in'}
        </button>
        <div className="demo-hint" data-testid="demo-hint">
          Demo users:{' '}
          {DEMO_USERS.map((name) => (
            <button
              key={name}
              type="button"
              className="chip"
              data-testid={`demo-user-${name}`}
              onClick={() => {
                setUsername(name);
                setPassword(DEMO_PASSWORD);
              }}
            >
              {name}
            </button>
          ))}{' '}
          — password <code>{DEMO_PASSWORD}</code>
        </div>
      </form>
    </main>
  );
}
