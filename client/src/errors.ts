/**
 * One error root. Every error carries a stable `code`: the number that went
 * on the wire (or the client's own HTTP-like number, see `ClientErrorCode`)
 * for request failures, a short string for misuse of the library.
 */

export class RxDjangoError extends Error {
  readonly code: number | string;

  constructor(code: number | string, message: string) {
    super(message);
    this.name = new.target.name;
    this.code = code;
  }
}

/** The channel class or its options are wrong; the message names the fix. */
export class ConfigurationError extends RxDjangoError {
  declare readonly code: 'configuration';

  constructor(message: string) {
    super('configuration', message);
  }
}

/** An action call failed: the server answered an error, or the client gave up. */
export class ActionError extends RxDjangoError {
  declare readonly code: number;
  /** Extra detail from the server (DRF validation errors on writes). */
  readonly detail: unknown;

  constructor(code: number, message: string, detail?: unknown) {
    super(code, message);
    this.detail = detail;
  }
}

/** An optimistic write was refused or lost; its local effect has been rolled back. */
export class WriteError extends ActionError {}

/**
 * Why a connection stopped for good (auth refused, anchor not found) or
 * could not start (no WebSocket implementation). Exposed as the channel's
 * `error`; the channel does not reconnect after one.
 */
export class ConnectionError extends RxDjangoError {
  declare readonly code: number;

  constructor(code: number, message: string) {
    super(code, message);
  }
}
