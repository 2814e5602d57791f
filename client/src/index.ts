/** `@rxdjango/react`: the core and the React hooks. Use `@rxdjango/react/core` without React. */

export * from './core';
export { useChannel, useChannelEvent, useChannelInstance, useChannelState, useInstance } from './react';
