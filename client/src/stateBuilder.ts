/**
 * Rebuilds the nested state from flat instance records (PROTOCOL §3): the
 * protocol's semantics over the node graph of `stateGraph.ts`.
 *
 * - Records are applied to the graph as they come; nothing is built until
 *   the state is read (`getState`), so an initial load of N records under
 *   one parent builds each instance once, in O(N).
 * - A delta rebuilds the changed instances and their ancestors only;
 *   everything else keeps its object identity (React skips it).
 * - A `delete` removes the instance from every list that held it at once,
 *   without waiting for the parents' updates (which may come in any order).
 * - Optimistic writes are overlays (patches, temporary children) that never
 *   modify the server's records. Rolling one back drops the overlay: the
 *   previous values and list positions are what the server said, and
 *   server records received meanwhile are kept.
 * - Loads: `initialAnchors` announces one end marker per anchor. Until the
 *   last one, `loading` is true and the timestamps seen are not yet
 *   committed to `lastUpdate`, so an interrupted load is asked again in full.
 *
 * The builder does no I/O and reads no clock; the channel feeds it decoded
 * frames and reads the state when it publishes.
 */

import {
  META_KEYS,
  NOTIFICATION_TYPE,
  Operation,
  isId,
  type Id,
  type InstanceRecord,
  type NotificationRecord,
} from './protocol';
import { StateGraph, keyOf, sameElements, type Decorator, type Fields, type Node } from './stateGraph';
import type { StateModel } from './types';

export type { Decorator } from './stateGraph';

export interface BuilderSchema {
  readonly anchorType: string;
  readonly many: boolean;
  readonly model: StateModel;
}

export interface ApplyResult {
  /** `_notification` records of the batch, in order. */
  readonly notifications: NotificationRecord[];
  /** The batch held the last end marker of a (re)load. */
  readonly loadCompleted: boolean;
}

function stripMeta(record: InstanceRecord): Fields {
  const out: Fields = {};
  for (const key of Object.keys(record)) {
    if (!META_KEYS.has(key)) out[key] = record[key];
  }
  return out;
}

export class StateBuilder {
  private readonly graph: StateGraph;
  private anchorIds: Id[] = [];
  private anchorsChanged = true;
  /** End markers still expected by the current (re)load. */
  private pendingEnds = 0;
  private pendingMaxTstamp: number | null = null;
  private committedTstamp: number | null = null;
  private everLoaded = false;
  private state: unknown = undefined;

  constructor(
    private readonly schema: BuilderSchema,
    decorator?: Decorator,
  ) {
    this.graph = new StateGraph(schema.model, decorator);
    if (schema.many) this.state = [];
  }

  // ------------------------------------------------------------ load cycle

  /** A (re)load is in progress: `initialAnchors` seen, not all end markers yet. */
  get loading(): boolean {
    return this.pendingEnds > 0;
  }

  /** Instances held (records, placeholders of mentioned ids, pending creates): for diagnostics. */
  get size(): number {
    return this.graph.size;
  }

  /** A complete state was received at least once. */
  get ready(): boolean {
    return this.everLoaded;
  }

  /**
   * Highest `_tstamp` of a complete state: sent as `lastUpdate` on
   * reconnect. Timestamps of a load are committed only at its last end
   * marker, so an interrupted load never makes the server skip records
   * that were not received.
   */
  get lastUpdate(): number | null {
    return this.committedTstamp;
  }

  /** `initialAnchors`: the anchors, in order; one end marker follows each. */
  beginLoad(anchorIds: readonly Id[]): boolean {
    this.anchorIds = [...anchorIds];
    this.anchorsChanged = true;
    this.pendingEnds = anchorIds.length;
    this.pendingMaxTstamp = null;
    if (this.pendingEnds === 0) {
      this.completeLoad();
      return true;
    }
    return false;
  }

  /** `resync`: drop what is held for this anchor; its full state follows. */
  resync(anchorId: Id): void {
    const anchor = this.graph.get(this.schema.anchorType, anchorId);
    if (anchor === undefined) return;
    const keep = new Set<Node>();
    for (const id of this.anchorIds) {
      const other = this.graph.get(this.schema.anchorType, id);
      if (other !== undefined && other !== anchor) this.graph.mark(other, keep);
    }
    const drop = new Set<Node>();
    this.graph.mark(anchor, drop, keep);
    this.graph.forget(drop);
  }

  prependAnchor(anchorId: Id): void {
    if (this.anchorIndex(anchorId) >= 0) return;
    this.anchorIds = [anchorId, ...this.anchorIds];
    this.anchorsChanged = true;
  }

  appendAnchor(anchorId: Id): void {
    if (this.anchorIndex(anchorId) >= 0) return;
    this.anchorIds = [...this.anchorIds, anchorId];
    this.anchorsChanged = true;
  }

  /** Apply one batch of records, in order. */
  applyRecords(records: readonly InstanceRecord[]): ApplyResult {
    const notifications: NotificationRecord[] = [];
    let loadCompleted = false;
    for (const record of records) {
      if (record._instance_type === NOTIFICATION_TYPE) {
        notifications.push(record);
        continue;
      }
      this.seeTstamp(record._tstamp);
      switch (record._operation) {
        case Operation.END_INITIAL_STATE:
          if (this.pendingEnds > 0 && --this.pendingEnds === 0) {
            this.completeLoad();
            loadCompleted = true;
          }
          break;
        case Operation.INITIAL_STATE:
        case Operation.CREATE:
          if (isId(record.id)) this.upsert(record, true);
          break;
        case Operation.UPDATE:
          if (isId(record.id)) this.upsert(record, false);
          break;
        case Operation.DELETE:
          if (isId(record.id)) this.remove(record._instance_type, record.id);
          break;
        default:
          break;
      }
    }
    return { notifications, loadCompleted };
  }

  // ------------------------------------------------------------ reading

  /**
   * The nested state: the anchor (single channel) or the anchors in order
   * (many channel). Same identity as the previous call when nothing changed.
   */
  getState(): unknown {
    if (!this.anchorsChanged && !this.graph.changed) return this.state;
    if (this.schema.many) {
      const out: Fields[] = [];
      for (const id of this.anchorIds) {
        const node = this.graph.get(this.schema.anchorType, id);
        const built = node === undefined ? undefined : this.graph.build(node);
        if (built !== undefined) out.push(built);
      }
      const previous = this.state as Fields[];
      if (!sameElements(previous, out)) this.state = out;
    } else {
      const id = this.anchorIds[0];
      const node = id === undefined ? undefined : this.graph.get(this.schema.anchorType, id);
      this.state = node === undefined ? undefined : this.graph.build(node);
    }
    this.anchorsChanged = false;
    this.graph.changed = false;
    return this.state;
  }

  /** One instance, built with its references; undefined when absent. */
  getInstance(instanceType: string, id: Id): Fields | undefined {
    const node = this.graph.get(instanceType, id);
    return node === undefined ? undefined : this.graph.build(node);
  }

  /** The instance is a pending optimistic create (its id is temporary). */
  isPendingCreate(instanceType: string, id: Id): boolean {
    return this.graph.get(instanceType, id)?.created !== undefined;
  }

  // ------------------------------------------------------------ optimistic overlays

  addSavePatch(instanceType: string, id: Id, writeId: number, fields: Fields): void {
    const node = this.graph.getOrCreate(instanceType, id);
    node.patches.push({ kind: 'save', writeId, fields, touched: new Set() });
    this.graph.refresh(node);
  }

  addDeletePatch(instanceType: string, id: Id, writeId: number): void {
    const node = this.graph.getOrCreate(instanceType, id);
    node.patches.push({ kind: 'delete', writeId });
    this.graph.refresh(node);
  }

  /**
   * Settle a save or delete. Confirmed: the write becomes part of the
   * server's record (fields a server record already set since are left as
   * the server said). Refused: the patch is dropped, which restores the
   * server's values and, for a delete, the instance at its positions.
   */
  settlePatch(instanceType: string, id: Id, writeId: number, confirmed: boolean): void {
    const node = this.graph.get(instanceType, id);
    if (node === undefined) return;
    const index = node.patches.findIndex((p) => p.writeId === writeId);
    if (index < 0) return;
    const [patch] = node.patches.splice(index, 1);
    if (confirmed && patch !== undefined && node.base !== undefined) {
      if (patch.kind === 'delete') {
        this.remove(instanceType, id);
        return;
      }
      const next: Fields = { ...node.base };
      for (const field of Object.keys(patch.fields)) {
        if (!patch.touched.has(field)) next[field] = patch.fields[field];
      }
      node.base = next;
    }
    this.graph.refresh(node);
    this.graph.release(node);
  }

  /** Show a pending create at the end of `parent[relationName]`. */
  addTempChild(
    parentType: string,
    parentId: Id,
    relationName: string,
    childType: string,
    tempId: Id,
    data: Fields,
  ): void {
    const parent = this.graph.getOrCreate(parentType, parentId);
    const child = this.graph.getOrCreate(childType, tempId);
    child.created = { ...data, id: tempId };
    parent.tempChildren ??= new Map();
    const pending = parent.tempChildren.get(relationName) ?? [];
    parent.tempChildren.set(relationName, [...pending, child]);
    // Only the oldest pending create's snapshot is read (StateGraph.build).
    if (pending.length === 0) this.restartArrivals(parent, relationName);
    this.graph.addParent(child, parent);
    this.graph.refresh(child);
    this.graph.invalidate(parent);
  }

  /**
   * Settle a pending create. The temporary instance goes away either way.
   * With the real pk (confirmed), the data becomes the new instance's
   * record unless the server's record arrived first, and its pk is added to
   * the parent's list if the parent's update has not done so yet.
   */
  settleTempChild(
    parentType: string,
    parentId: Id,
    relationName: string,
    childType: string,
    tempId: Id,
    realId: Id | undefined,
  ): void {
    const parent = this.graph.get(parentType, parentId);
    const child = this.graph.get(childType, tempId);
    const data = child?.created;
    if (parent !== undefined && child !== undefined && parent.tempChildren !== undefined) {
      const rest = (parent.tempChildren.get(relationName) ?? []).filter((n) => n !== child);
      if (rest.length > 0) parent.tempChildren.set(relationName, rest);
      else parent.tempChildren.delete(relationName);
      this.graph.removeParent(child, parent);
      this.graph.invalidate(parent);
    }
    if (child !== undefined) {
      child.created = undefined;
      this.graph.refresh(child);
      this.graph.release(child);
    }
    if (realId === undefined || data === undefined) {
      if (parent !== undefined) this.restartArrivals(parent, relationName);
      return;
    }
    const real = this.graph.getOrCreate(childType, realId);
    if (real.base === undefined) {
      real.base = { ...data, id: realId };
      this.graph.refresh(real);
    }
    const list = parent?.base?.[relationName];
    if (parent?.base !== undefined) {
      const ids = Array.isArray(list) ? list : [];
      if (!ids.some((v) => isId(v) && keyOf(v) === real.key)) {
        parent.base = { ...parent.base, [relationName]: [...ids, realId] };
        this.graph.refresh(parent);
      }
    }
    this.graph.release(real);
    if (parent !== undefined) this.restartArrivals(parent, relationName);
  }

  /** The creates still pending in a list count instances joining it from now on. */
  private restartArrivals(parent: Node, relationName: string): void {
    const siblings = parent.view?.[relationName];
    const keys = new Set(Array.isArray(siblings) ? siblings.filter(isId).map(keyOf) : []);
    for (const temp of parent.tempChildren?.get(relationName) ?? []) temp.siblingsAtCreate = keys;
  }

  // ------------------------------------------------------------ records

  private seeTstamp(tstamp: unknown): void {
    if (typeof tstamp !== 'number' || !Number.isFinite(tstamp)) return;
    if (this.loading) {
      this.pendingMaxTstamp = Math.max(this.pendingMaxTstamp ?? tstamp, tstamp);
    } else {
      this.committedTstamp = Math.max(this.committedTstamp ?? tstamp, tstamp);
    }
  }

  private completeLoad(): void {
    this.pendingEnds = 0;
    if (this.pendingMaxTstamp !== null) {
      this.committedTstamp = Math.max(this.committedTstamp ?? this.pendingMaxTstamp, this.pendingMaxTstamp);
    }
    this.pendingMaxTstamp = null;
    this.everLoaded = true;
    this.anchorsChanged = true;
    this.sweep();
  }

  /** `initial_state` / `create` replace the record; `update` merges the changed fields. */
  private upsert(record: InstanceRecord, replace: boolean): void {
    const node = this.graph.getOrCreate(record._instance_type, record.id);
    const fields = stripMeta(record);
    node.base = replace || node.base === undefined ? fields : { ...node.base, ...fields };
    for (const patch of node.patches) {
      if (patch.kind !== 'save') continue;
      for (const field of Object.keys(fields)) {
        if (field in patch.fields) patch.touched.add(field);
      }
    }
    this.graph.refresh(node);
  }

  /**
   * A server `delete`: the instance leaves every list that held it now,
   * without waiting for the parents' updates (which may come in any order),
   * and an anchor leaves the anchor list.
   */
  private remove(instanceType: string, id: Id): void {
    if (instanceType === this.schema.anchorType) {
      const index = this.anchorIndex(id);
      if (index >= 0) {
        this.anchorIds = this.anchorIds.filter((_, i) => i !== index);
        this.anchorsChanged = true;
      }
    }
    const node = this.graph.get(instanceType, id);
    if (node === undefined) return;
    for (const parent of [...node.parents.keys()]) this.dropFromLists(parent, node);
    node.base = undefined;
    this.graph.refresh(node);
    this.graph.release(node);
  }

  private dropFromLists(parent: Node, child: Node): void {
    const base = parent.base;
    if (base === undefined) return;
    let next: Fields | undefined;
    for (const [field, spec] of this.graph.relationsOf(parent.type)) {
      const list = base[field];
      if (!spec.many || spec.type !== child.type || !Array.isArray(list)) continue;
      const kept = list.filter((v) => !(isId(v) && keyOf(v) === child.key));
      if (kept.length !== list.length) {
        next ??= { ...base };
        next[field] = kept;
      }
    }
    if (next !== undefined) {
      parent.base = next;
      this.graph.refresh(parent);
    }
  }

  private anchorIndex(id: Id): number {
    const key = keyOf(id);
    return this.anchorIds.findIndex((a) => keyOf(a) === key);
  }

  /**
   * After a complete load the held state equals the server's: records no
   * anchor reaches (deleted while away, moved to another anchor) are
   * dropped, so a full resend without `resync` leaves nothing stale behind.
   */
  private sweep(): void {
    const live = new Set<Node>();
    for (const id of this.anchorIds) {
      const anchor = this.graph.get(this.schema.anchorType, id);
      if (anchor !== undefined) this.graph.mark(anchor, live);
    }
    const dead: Node[] = [];
    for (const node of this.graph.all()) {
      if (!live.has(node) && node.patches.length === 0 && node.created === undefined) dead.push(node);
    }
    this.graph.forget(dead);
  }
}
