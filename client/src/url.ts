/**
 * Socket URL of a channel: the route template filled with the constructor's
 * arguments, joined to a base URL. Pure functions; the page's location is
 * read only when no base URL is configured, at connect time.
 */

import { ConfigurationError } from './errors';

export type EndpointArgs = Readonly<Record<string, string | number>>;

/**
 * Replace every `{name}` of `template` with the URL-encoded argument.
 * Throws `ConfigurationError` when an argument is missing, so a typo in a
 * route shows at construction rather than as a 404 on the socket.
 */
export function fillEndpoint(template: string, args: EndpointArgs): string {
  return template.replace(/\{([^{}]+)\}/g, (_match, name: string) => {
    const value = args[name];
    if (value === undefined) {
      throw new ConfigurationError(
        `endpoint "${template}" expects argument "${name}", got only: ${Object.keys(args).join(', ') || 'none'}`,
      );
    }
    return encodeURIComponent(String(value));
  });
}

/** Join a base URL and a path with exactly one slash between them; http(s) becomes ws(s). */
export function joinURL(base: string, path: string): string {
  const wsBase = base.replace(/^http(s?):\/\//i, 'ws$1://');
  return `${wsBase.replace(/\/+$/, '')}/${path.replace(/^\/+/, '')}`;
}

interface LocationLike {
  protocol: string;
  host: string;
}

/** `ws(s)://host` of the page, or undefined outside a browser. */
export function pageOrigin(): string | undefined {
  const location = (globalThis as { location?: LocationLike }).location;
  if (location === undefined || !location.host) return undefined;
  return `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}`;
}

/**
 * Pick the base URL: the channel option first, then the generated class's
 * `baseURL` when not empty, then the page's origin.
 */
export function resolveBaseURL(optionBase: string | undefined, classBase: string | undefined): string {
  const base = optionBase || classBase || pageOrigin();
  if (!base) {
    throw new ConfigurationError(
      'no base URL for the socket: pass options.baseURL (e.g. "ws://127.0.0.1:8000/") or set the channel class baseURL',
    );
  }
  return base;
}
