/** `@rxdjango/react`: the core and the React hooks. Use `@rxdjango/react/core` without React. */

export * from './core';
export { useChannel, useChannelEvent, useChannelState, useInstance } from './react';
