/**
 * Shared type aliases: the schema a generated channel declares, and the
 * shape of the state it produces.
 */

import type { Id } from './protocol';

/** One reference field of an instance type: the referenced type and whether it is a list. */
export interface RelationSpec {
  readonly type: string;
  readonly many: boolean;
}

/**
 * The reference fields of each instance type, keyed by `_instance_type`.
 * Every field not listed is a plain value. Generated as `static model`.
 */
export type StateModel = Readonly<Record<string, Readonly<Record<string, RelationSpec>>>>;

/** The operations of PROTOCOL §5. */
export type WriteOperation = 'save' | 'create' | 'delete';

/** Which operations each instance type accepts (`Meta.writable`). Generated as `static writable`. */
export type WritableMap = Readonly<Record<string, readonly WriteOperation[]>>;

/**
 * The state a channel publishes. A channel declared as
 * `ContextChannel<JobType[]>` (a `many` channel) holds the anchors in order;
 * `ContextChannel<JobType>` holds the one anchor, `undefined` until it arrives.
 */
export type ChannelState<T> = T extends readonly (infer E)[] ? E[] : T | undefined;

/** Methods added (non-enumerable) to instances of writable types. */
export interface InstanceMethods<T> {
  save(data: Partial<T>): Promise<void>;
  delete(): Promise<void>;
}

/** An instance as built by the channel, seen with its write methods. */
export type WritableInstance<T> = T & InstanceMethods<T>;

/** A list relation whose child type is creatable: `.create(data)` resolves with the new pk. */
export type CreatableList<T> = T[] & {
  create(data: Partial<T>): Promise<Id | undefined>;
};
