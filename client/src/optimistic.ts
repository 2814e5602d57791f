/**
 * Optimistic writes (PROTOCOL §5): apply locally at once, send a `write`
 * frame, and settle on the `writeResponse`.
 *
 * The local effect is an overlay in the state builder, never a mutation of
 * the server's records. Hence:
 * - a refused write (or one lost with the socket, or timed out) is undone by
 *   dropping its overlay: previous values and a deleted instance's position
 *   in every list come back exactly, and server records received while the
 *   write was pending are kept;
 * - a confirmed write is folded into the server's record, except fields the
 *   server has set since (its value wins);
 * - the data sent and kept is a JSON copy taken at call time, so mutating the
 *   caller's object afterwards changes neither.
 *
 * A create shows a temporary instance (id `rx-tmp-<n>`) at the end of the
 * parent's list; it is replaced by the instance with the real pk from
 * `writeResponse.instanceId`. Writes on a temporary instance are refused
 * with code 409 until its create is confirmed.
 */

import { ActionError, WriteError } from './errors';
import type { Outcome, RequestTracker } from './requests';
import { ClientErrorCode, MessageType, type Id, type WriteFrame, type WriteResponseMessage } from './protocol';
import type { StateBuilder } from './stateBuilder';
import type { StateModel, WritableMap, WriteOperation } from './types';

const TEMP_PREFIX = 'rx-tmp-';

/** True for the temporary id of an optimistic create not confirmed yet. */
export function isTemporaryId(id: unknown): boolean {
  return typeof id === 'string' && id.startsWith(TEMP_PREFIX);
}

export interface WriteContext {
  readonly builder: StateBuilder;
  readonly tracker: RequestTracker;
  readonly model: StateModel;
  readonly writable: WritableMap;
  /** The local state changed: publish it. */
  readonly changed: () => void;
}

function toWriteError(error: unknown): unknown {
  if (error instanceof WriteError || !(error instanceof ActionError)) return error;
  return new WriteError(error.code, error.message, error.detail);
}

export class WriteManager {
  private writeSeq = 0;

  constructor(private readonly ctx: WriteContext) {}

  /** Whether `instanceType` accepts `operation` on this channel (`Meta.writable`). */
  allows(instanceType: string, operation: WriteOperation): boolean {
    return this.ctx.writable[instanceType]?.includes(operation) ?? false;
  }

  save(instanceType: string, id: Id, data: Readonly<Record<string, unknown>>): Promise<void> {
    const refused = this.precheck(instanceType, 'save', instanceType, id);
    if (refused !== undefined) return Promise.reject(refused);
    const writeId = ++this.writeSeq;
    const fields = this.copyData(instanceType, data);
    this.ctx.builder.addSavePatch(instanceType, id, writeId, fields);
    this.ctx.changed();
    const frame: WriteFrame = {
      type: MessageType.WRITE,
      writeId,
      operation: 'save',
      instanceType,
      instanceId: id,
      data: fields,
    };
    return this.send(writeId, frame, (outcome) => {
      this.ctx.builder.settlePatch(instanceType, id, writeId, outcome.ok);
    }).then(() => undefined);
  }

  delete(instanceType: string, id: Id): Promise<void> {
    const refused = this.precheck(instanceType, 'delete', instanceType, id);
    if (refused !== undefined) return Promise.reject(refused);
    const writeId = ++this.writeSeq;
    this.ctx.builder.addDeletePatch(instanceType, id, writeId);
    this.ctx.changed();
    const frame: WriteFrame = {
      type: MessageType.WRITE,
      writeId,
      operation: 'delete',
      instanceType,
      instanceId: id,
    };
    return this.send(writeId, frame, (outcome) => {
      this.ctx.builder.settlePatch(instanceType, id, writeId, outcome.ok);
    }).then(() => undefined);
  }

  /**
   * Create a child in `parent[relationName]`. Resolves with the new pk
   * (`undefined` only with a server that does not send `instanceId`).
   */
  create(
    parentType: string,
    parentId: Id,
    relationName: string,
    data: Readonly<Record<string, unknown>>,
  ): Promise<Id | undefined> {
    const relation = this.ctx.model[parentType]?.[relationName];
    if (relation === undefined || !relation.many) {
      return Promise.reject(
        new WriteError(
          ClientErrorCode.BAD_REQUEST,
          `expected a list relation of ${parentType}, got "${relationName}"`,
        ),
      );
    }
    const childType = relation.type;
    const refused = this.precheck(childType, 'create', parentType, parentId);
    if (refused !== undefined) return Promise.reject(refused);
    const writeId = ++this.writeSeq;
    const tempId = `${TEMP_PREFIX}${writeId}`;
    const fields = this.copyData(childType, data);
    this.ctx.builder.addTempChild(parentType, parentId, relationName, childType, tempId, fields);
    this.ctx.changed();
    const frame: WriteFrame = {
      type: MessageType.WRITE,
      writeId,
      operation: 'create',
      instanceType: childType,
      parentType,
      parentId,
      relationName,
      data: fields,
    };
    return this.send(writeId, frame, (outcome) => {
      const realId = outcome.ok ? outcome.value.instanceId : undefined;
      this.ctx.builder.settleTempChild(parentType, parentId, relationName, childType, tempId, realId);
    }).then((response) => response.instanceId);
  }

  /** Route a `writeResponse` to its pending write. */
  handleResponse(message: WriteResponseMessage): void {
    const outcome: Outcome<WriteResponseMessage> = message.success
      ? { ok: true, value: message }
      : {
          ok: false,
          error: new WriteError(
            message.error?.code ?? ClientErrorCode.BAD_REQUEST,
            message.error?.message ?? 'write refused',
            message.error?.detail,
          ),
        };
    this.ctx.tracker.settle(this.key(message.writeId), outcome);
  }

  private key(writeId: number): string {
    return `write:${writeId}`;
  }

  private send(
    writeId: number,
    frame: WriteFrame,
    undoOrCommit: (outcome: Outcome<WriteResponseMessage>) => void,
  ): Promise<WriteResponseMessage> {
    return this.ctx.tracker
      .start<WriteResponseMessage>(this.key(writeId), frame, (outcome) => {
        undoOrCommit(outcome);
        this.ctx.changed();
      })
      .catch((error: unknown) => {
        throw toWriteError(error);
      });
  }

  /** Refusals that need no round trip: undeclared operation, temporary target. */
  private precheck(
    instanceType: string,
    operation: WriteOperation,
    targetType: string,
    targetId: Id,
  ): WriteError | undefined {
    if (!this.allows(instanceType, operation)) {
      return new WriteError(
        ClientErrorCode.NOT_WRITABLE,
        `${instanceType} does not accept "${operation}" on this channel: declare it in Meta.writable`,
      );
    }
    if (isTemporaryId(targetId) || this.ctx.builder.isPendingCreate(targetType, targetId)) {
      return new WriteError(
        ClientErrorCode.PENDING_CREATE,
        `${targetType} ${String(targetId)} is not created yet: wait for its create() to resolve`,
      );
    }
    return undefined;
  }

  /**
   * A private JSON copy of the data (what the server will see). A single
   * relation given as an instance object is sent as its pk.
   */
  private copyData(instanceType: string, data: Readonly<Record<string, unknown>>): Record<string, unknown> {
    const relations = this.ctx.model[instanceType] ?? {};
    const flat: Record<string, unknown> = {};
    for (const [field, value] of Object.entries(data)) {
      const spec = relations[field];
      const isInstance = typeof value === 'object' && value !== null && !Array.isArray(value) && 'id' in value;
      flat[field] = spec !== undefined && !spec.many && isInstance ? (value as { id: unknown }).id : value;
    }
    return JSON.parse(JSON.stringify(flat)) as Record<string, unknown>;
  }
}
