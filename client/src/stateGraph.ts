/**
 * The store under the state builder: one node per (type, id), the counted
 * child → parent references between them, and the cached built objects.
 *
 * - A node's `view` is its server record with the pending optimistic
 *   patches applied; its references (pks) link it to child nodes.
 * - `refresh(node)` recomputes a view, relinks only the reference fields
 *   that changed, and marks the node and its ancestors stale. Invariant: a
 *   stale node's ancestors are all stale, so marking stops at the first
 *   node already stale and costs nothing for the records of a load.
 * - `build(node)` returns the cached object of a fresh node and rebuilds a
 *   stale one, reusing the objects of its fresh children: untouched
 *   branches keep their identity.
 * - Nodes that nothing holds anymore (no record, no overlay, no parent) are
 *   released, so back-references never outlive what they point to.
 *
 * Protocol semantics (operations, anchors, loads) live in `stateBuilder.ts`.
 */

import { isId, type Id } from './protocol';
import type { RelationSpec, StateModel } from './types';

export type Fields = Record<string, unknown>;

export interface SavePatch {
  readonly kind: 'save';
  readonly writeId: number;
  /** A private copy of the data written: never shared with the caller. */
  readonly fields: Fields;
  /** Fields that a server record set after the write was made: not folded on success. */
  readonly touched: Set<string>;
}

export interface DeletePatch {
  readonly kind: 'delete';
  readonly writeId: number;
}

export type Patch = SavePatch | DeletePatch;

export interface Node {
  readonly type: string;
  readonly id: Id;
  readonly key: string;
  /** The server's record, meta keys stripped; undefined while none was received. */
  base: Fields | undefined;
  /** Data of a pending optimistic create; set only on temporary nodes. */
  created: Fields | undefined;
  /** Pending optimistic writes, in the order they were made. */
  readonly patches: Patch[];
  /** base (or created) with the patches applied; undefined = absent from the state. */
  view: Fields | undefined;
  /** Pending creates shown at the end of a list relation, by relation name. */
  tempChildren: Map<string, Node[]> | undefined;
  /** On a temporary node: keys of the parent's list when the create was made. */
  siblingsAtCreate: ReadonlySet<string> | undefined;
  /** Nodes whose view references this one, with the number of references. */
  readonly parents: Map<Node, number>;
  built: Fields | undefined;
  /** `built` is out of date. Invariant: a stale node's ancestors are all stale. */
  stale: boolean;
  building: boolean;
}

/** Hooks that add the write methods to built objects (non-enumerable). */
export interface Decorator {
  instance(target: Fields, instanceType: string, id: Id): void;
  list(target: unknown[], parentType: string, parentId: Id, relationName: string, childType: string): void;
}

export function keyOf(id: Id): string {
  return typeof id === 'string' ? id : String(id);
}

export function sameElements(a: readonly unknown[], b: readonly unknown[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export class StateGraph {
  private readonly nodes = new Map<string, Map<string, Node>>();
  private readonly relations = new Map<string, ReadonlyArray<readonly [string, RelationSpec]>>();
  /** Set when any node went stale; the builder resets it after reading the state. */
  changed = true;

  constructor(
    model: StateModel,
    private readonly decorator?: Decorator,
  ) {
    for (const [type, fields] of Object.entries(model)) {
      this.relations.set(type, Object.entries(fields));
    }
  }

  /** Nodes held. */
  get size(): number {
    let count = 0;
    for (const byKey of this.nodes.values()) count += byKey.size;
    return count;
  }

  /** Every node, for whole-state passes (sweep). */
  *all(): IterableIterator<Node> {
    for (const byKey of this.nodes.values()) yield* byKey.values();
  }

  relationsOf(type: string): ReadonlyArray<readonly [string, RelationSpec]> {
    return this.relations.get(type) ?? [];
  }

  get(type: string, id: Id): Node | undefined {
    return this.nodes.get(type)?.get(keyOf(id));
  }

  getOrCreate(type: string, id: Id): Node {
    let byKey = this.nodes.get(type);
    if (byKey === undefined) {
      byKey = new Map();
      this.nodes.set(type, byKey);
    }
    const key = keyOf(id);
    let node = byKey.get(key);
    if (node === undefined) {
      node = {
        type,
        id,
        key,
        base: undefined,
        created: undefined,
        patches: [],
        view: undefined,
        tempChildren: undefined,
        siblingsAtCreate: undefined,
        parents: new Map(),
        built: undefined,
        stale: false,
        building: false,
      };
      byKey.set(key, node);
    }
    return node;
  }

  /** Recompute the view after base/patches/created changed; relink references; mark stale. */
  refresh(node: Node): void {
    const before = node.view;
    const after = this.computeView(node);
    if (before === after) return;
    node.view = after;
    this.relink(node, before, after);
    this.invalidate(node);
  }

  private computeView(node: Node): Fields | undefined {
    let view = node.created ?? node.base;
    if (view === undefined) return undefined;
    for (const patch of node.patches) {
      if (patch.kind === 'delete') return undefined;
      view = { ...view, ...patch.fields };
    }
    return view;
  }

  /**
   * Update the child → parent counts for the reference fields that changed
   * between two views. Cost: the size of the changed fields only. New links
   * are added before old ones are removed, so a child present in both
   * never drops to zero and is never released by mistake.
   */
  private relink(node: Node, before: Fields | undefined, after: Fields | undefined): void {
    const orphans: Node[] = [];
    for (const [field, spec] of this.relationsOf(node.type)) {
      const oldValue = before?.[field];
      const newValue = after?.[field];
      if (oldValue === newValue) continue;
      this.eachRef(spec, newValue, true, (child) => this.addParent(child, node));
      this.eachRef(spec, oldValue, false, (child) => {
        if (this.removeParent(child, node)) orphans.push(child);
      });
    }
    for (const child of orphans) this.release(child);
  }

  private eachRef(spec: RelationSpec, value: unknown, create: boolean, fn: (child: Node) => void): void {
    const visit = (id: unknown): void => {
      if (!isId(id)) return;
      const child = create ? this.getOrCreate(spec.type, id) : this.get(spec.type, id);
      if (child !== undefined) fn(child);
    };
    if (spec.many) {
      if (Array.isArray(value)) for (const id of value) visit(id);
    } else {
      visit(value);
    }
  }

  addParent(child: Node, parent: Node): void {
    child.parents.set(parent, (child.parents.get(parent) ?? 0) + 1);
  }

  /** Returns true when the child has no parent left. */
  removeParent(child: Node, parent: Node): boolean {
    const count = child.parents.get(parent);
    if (count === undefined) return false;
    if (count > 1) {
      child.parents.set(parent, count - 1);
      return false;
    }
    child.parents.delete(parent);
    return child.parents.size === 0;
  }

  /** Forget a node nothing holds anymore: no record, no overlay, no parent. */
  release(node: Node): void {
    if (
      node.base !== undefined ||
      node.created !== undefined ||
      node.patches.length > 0 ||
      node.parents.size > 0 ||
      (node.tempChildren !== undefined && node.tempChildren.size > 0)
    ) {
      return;
    }
    const byKey = this.nodes.get(node.type);
    if (byKey?.get(node.key) === node) byKey.delete(node.key);
  }

  /** Mark the node and its ancestors stale; stops at nodes already stale (the invariant). */
  invalidate(node: Node): void {
    this.changed = true;
    const stack = [node];
    while (stack.length > 0) {
      const current = stack.pop() as Node;
      if (current.stale) continue;
      current.stale = true;
      for (const parent of current.parents.keys()) stack.push(parent);
    }
  }

  /** Everything a node holds: references of its view and of its server record, and pending creates. */
  private children(node: Node): Node[] {
    const out: Node[] = [];
    const views = node.view === node.base ? [node.view] : [node.view, node.base];
    for (const [field, spec] of this.relationsOf(node.type)) {
      for (const view of views) {
        if (view !== undefined) this.eachRef(spec, view[field], false, (c) => out.push(c));
      }
    }
    if (node.tempChildren !== undefined) {
      for (const temp of node.tempChildren.values()) out.push(...temp);
    }
    return out;
  }

  /** Add every node reachable from `start` to `into`, not entering `exclude`. */
  mark(start: Node, into: Set<Node>, exclude?: ReadonlySet<Node>): void {
    const stack = [start];
    while (stack.length > 0) {
      const node = stack.pop() as Node;
      if (into.has(node) || exclude?.has(node)) continue;
      into.add(node);
      stack.push(...this.children(node));
    }
  }

  /** Drop the server records of `nodes` (overlays stay until their writes settle). */
  forget(nodes: Iterable<Node>): void {
    const dropped: Node[] = [];
    for (const node of nodes) {
      if (node.base === undefined) continue;
      node.base = undefined;
      dropped.push(node);
    }
    for (const node of dropped) this.refresh(node);
    for (const node of dropped) this.release(node);
  }

  // ------------------------------------------------------------ building

  /**
   * The built object of a node: a fresh object when stale, else the cached
   * one. Lists skip ids with no record (yet); a single reference to an
   * absent instance is null. A list whose elements are all unchanged keeps
   * its previous array.
   */
  build(node: Node): Fields | undefined {
    if (!node.stale || node.building) return node.built;
    const view = node.view;
    if (view === undefined) {
      node.built = undefined;
      node.stale = false;
      return undefined;
    }
    node.building = true;
    const previous = node.built;
    const out: Fields = { ...view };
    for (const [field, spec] of this.relationsOf(node.type)) {
      const value = view[field];
      if (spec.many) {
        const list: Fields[] = [];
        const temps = node.tempChildren?.get(field) ?? [];
        const known = temps[0]?.siblingsAtCreate;
        let arrived = 0;
        if (Array.isArray(value)) {
          for (const id of value) {
            const child = isId(id) ? this.get(spec.type, id) : undefined;
            const built = child === undefined ? undefined : this.build(child);
            if (built === undefined) continue;
            list.push(built);
            if (known !== undefined && child !== undefined && !known.has(child.key)) arrived += 1;
          }
        }
        // The writer's own records precede its reply: an instance that joined the list
        // since the oldest pending create stands for that create, so it is not shown twice.
        for (const temp of temps.slice(arrived)) {
          const built = this.build(temp);
          if (built !== undefined) list.push(built);
        }
        const before = previous?.[field];
        if (Array.isArray(before) && sameElements(before, list)) {
          out[field] = before;
        } else {
          this.decorator?.list(list, node.type, node.id, field, spec.type);
          out[field] = list;
        }
      } else {
        const child = isId(value) ? this.get(spec.type, value) : undefined;
        out[field] = (child === undefined ? undefined : this.build(child)) ?? null;
      }
    }
    this.decorator?.instance(out, node.type, node.id);
    node.built = out;
    node.stale = false;
    node.building = false;
    return out;
  }
}
