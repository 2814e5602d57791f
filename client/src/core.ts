/**
 * `@rxdjango/react/core`: everything but the React hooks. Imports nothing
 * outside this package, so it runs in Node or any framework without React.
 */

export { ContextChannel } from './channel';
export type { ChannelEvents, ChannelOptions, ChannelSnapshot, ChannelStatics } from './channel';
export { TERMINAL_STATUSES } from './connection';
export type { ConnectionStatus, WebSocketConstructor, WebSocketLike } from './connection';
export { ActionError, ConfigurationError, ConnectionError, RxDjangoError, WriteError } from './errors';
export { isTemporaryId } from './optimistic';
export { ClientErrorCode, CloseCode, MessageType, NOTIFICATION_TYPE, Operation, StatusCode } from './protocol';
export type {
  ErrorBody,
  Id,
  InstanceRecord,
  NotificationRecord,
  SystemMessage,
} from './protocol';
export { StateBuilder } from './stateBuilder';
export type { ApplyResult, BuilderSchema, Decorator } from './stateBuilder';
export type { ReconnectOptions } from './backoff';
export type {
  ChannelState,
  CreatableList,
  InstanceMethods,
  RelationSpec,
  StateModel,
  WritableInstance,
  WritableMap,
  WriteOperation,
} from './types';
export type { EndpointArgs } from './url';
