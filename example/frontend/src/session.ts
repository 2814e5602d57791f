/**
 * Login and the token. The token lives in `sessionStorage`: one per tab, so
 * two tabs (or two browser contexts) can be two different users.
 */

export interface Session {
  readonly token: string;
  readonly username: string;
}

const TOKEN_KEY = 'rxdjango-example.token';
const USERNAME_KEY = 'rxdjango-example.username';

function storage(): Storage | null {
  try {
    return window.sessionStorage;
  } catch {
    return null; // storage disabled: the session lasts as long as the page
  }
}

export function loadSession(): Session | null {
  const store = storage();
  const token = store?.getItem(TOKEN_KEY);
  const username = store?.getItem(USERNAME_KEY);
  return token && username ? { token, username } : null;
}

export function saveSession(session: Session): void {
  const store = storage();
  store?.setItem(TOKEN_KEY, session.token);
  store?.setItem(USERNAME_KEY, session.username);
}

export function clearSession(): void {
  const store = storage();
  store?.removeItem(TOKEN_KEY);
  store?.removeItem(USERNAME_KEY);
}

/** DRF's error body (`{"non_field_errors": [...]}`, `{"username": [...]}`) as one line. */
function drfMessage(body: unknown): string | null {
  if (typeof body !== 'object' || body === null) return null;
  const parts: string[] = [];
  for (const [field, value] of Object.entries(body as Record<string, unknown>)) {
    const text = Array.isArray(value) ? value.map(String).join(' ') : String(value);
    parts.push(field === 'non_field_errors' || field === 'detail' ? text : `${field}: ${text}`);
  }
  return parts.length > 0 ? parts.join(' ') : null;
}

/** `POST /api/login/` (DRF `obtain_auth_token`); throws an Error whose message is for the user. */
export async function login(username: string, password: string): Promise<Session> {
  let response: Response;
  try {
    response = await fetch('/api/login/', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify({ username, password }),
      // No cookies: an admin session cookie would make DRF demand a CSRF token.
      credentials: 'omit',
    });
  } catch {
    throw new Error('The server cannot be reached.');
  }
  let body: unknown = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: keep the status below
  }
  if (!response.ok) {
    throw new Error(drfMessage(body) ?? `Login failed (HTTP ${response.status}).`);
  }
  const token = (body as { token?: unknown } | null)?.token;
  if (typeof token !== 'string' || token === '') throw new Error('The server answered without a token.');
  return { token, username };
}
