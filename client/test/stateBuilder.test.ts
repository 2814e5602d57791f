import { describe, expect, it } from 'vitest';
import { StateBuilder, type InstanceRecord } from '@rxdjango/react/core';
import { JobChannel } from './fixtures/jobs.channels';
import type { JobType, TaskType } from './fixtures/jobs.interfaces';
import { JOB, LABEL, SPEC, TASK, USER, create, del, end, initial, jobRecords, update } from './support/records';

function builder(many = false): StateBuilder {
  return new StateBuilder({ anchorType: JOB, many, model: JobChannel.model });
}

function loaded(records: InstanceRecord[] = jobRecords()): StateBuilder {
  const b = builder();
  b.beginLoad([1]);
  b.applyRecords([...records, end()]);
  return b;
}

const job = (b: StateBuilder): JobType => b.getState() as JobType;
const jobs = (b: StateBuilder): JobType[] => b.getState() as JobType[];
const titles = (j: JobType): string[] => j.tasks.map((t) => t.title);

describe('initial state', () => {
  it('rebuilds the nested tree with references resolved', () => {
    expect(job(loaded())).toEqual({
      id: 1,
      name: 'Job',
      spec: { id: 5, text: 'spec' },
      tasks: [
        {
          id: 10,
          title: 'A',
          done: false,
          assignee: { id: 7, username: 'ana' },
          labels: [
            { id: 100, name: 'red' },
            { id: 101, name: 'blue' },
          ],
        },
        { id: 11, title: 'B', done: false, assignee: null, labels: [{ id: 101, name: 'blue' }] },
      ],
    });
  });

  it('builds the same objects whatever the order of the records', () => {
    const reversed = loaded([...jobRecords()].reverse());
    expect(job(reversed)).toEqual(job(loaded()));
  });

  it('shares one object for an instance reached by two paths', () => {
    const j = job(loaded());
    expect(j.tasks[0]?.labels[1]).toBe(j.tasks[1]?.labels[0]);
  });

  it('is loading until the end marker, which may sit anywhere in an array', () => {
    const b = builder();
    b.beginLoad([1]);
    const [first, ...rest] = jobRecords();
    expect(b.applyRecords([first as InstanceRecord]).loadCompleted).toBe(false);
    expect(b.loading).toBe(true);
    const result = b.applyRecords([...rest, end(3), update(TASK, 10, { title: 'live' }, 4)]);
    expect(result.loadCompleted).toBe(true);
    expect(b.loading).toBe(false);
    expect(b.ready).toBe(true);
    expect(job(b).tasks[0]?.title).toBe('live');
  });

  it('completes at once when a list channel has no anchors', () => {
    const b = builder(true);
    expect(b.beginLoad([])).toBe(true);
    expect(b.getState()).toEqual([]);
  });

  it('skips ids without a record and resolves them when the record arrives', () => {
    // Task 12 is another user's private record: mentioned, never sent.
    const records = jobRecords();
    records[0] = initial(JOB, 1, { name: 'Job', tasks: [12, 10, 11], spec: 5 });
    const b = loaded(records);
    expect(job(b).tasks.map((t) => t.id)).toEqual([10, 11]);
    b.applyRecords([create(TASK, 12, { title: 'late', done: false, labels: [], assignee: null })]);
    expect(job(b).tasks.map((t) => t.id)).toEqual([12, 10, 11]);
  });

  it('gives null for a single reference to an absent instance, then the instance', () => {
    const b = loaded(jobRecords().filter((r) => r._instance_type !== USER));
    expect(job(b).tasks[0]?.assignee).toBeNull();
    b.applyRecords([create(USER, 7, { username: 'ana' })]);
    expect(job(b).tasks[0]?.assignee).toEqual({ id: 7, username: 'ana' });
  });

  it('keeps meta keys out of the instances', () => {
    const task = job(loaded()).tasks[0] as TaskType & Record<string, unknown>;
    expect(Object.keys(task).sort()).toEqual(['assignee', 'done', 'id', 'labels', 'title']);
  });

  it('routes _notification records out of the state', () => {
    const b = loaded();
    const before = b.getState();
    const note = { _instance_type: '_notification', _tstamp: 9, _operation: 'create', id: 0, text: 'hi' } as InstanceRecord;
    const result = b.applyRecords([note]);
    expect(result.notifications).toEqual([note]);
    expect(b.getState()).toBe(before);
  });
});

describe('deltas', () => {
  it('merges update records into the instance', () => {
    const b = loaded();
    b.applyRecords([update(TASK, 10, { done: true })]);
    expect(job(b).tasks[0]).toMatchObject({ id: 10, title: 'A', done: true });
  });

  it('gives new identities to the changed object and its ancestors only', () => {
    const b = loaded();
    const before = job(b);
    b.applyRecords([update(TASK, 11, { title: 'B2' })]);
    const after = job(b);
    expect(after).not.toBe(before);
    expect(after.tasks).not.toBe(before.tasks);
    expect(after.tasks[1]).not.toBe(before.tasks[1]);
    expect(after.tasks[1]?.title).toBe('B2');
    // Untouched: the sibling task, the shared label, the spec, the user.
    expect(after.tasks[0]).toBe(before.tasks[0]);
    expect(after.tasks[1]?.labels).toBe(before.tasks[1]?.labels);
    expect(after.spec).toBe(before.spec);
    expect(after.tasks[0]?.assignee).toBe(before.tasks[0]?.assignee);
  });

  it('propagates a change of a shared instance to every parent', () => {
    const b = loaded();
    const before = job(b);
    b.applyRecords([update(LABEL, 101, { name: 'navy' })]);
    const after = job(b);
    expect(after.tasks[0]?.labels[1]?.name).toBe('navy');
    expect(after.tasks[1]?.labels[0]?.name).toBe('navy');
    expect(after.tasks[0]?.labels[0]).toBe(before.tasks[0]?.labels[0]);
    expect(after.spec).toBe(before.spec);
  });

  it('keeps the state identity when a batch changes nothing it shows', () => {
    const b = loaded();
    const before = b.getState();
    b.applyRecords([create(LABEL, 999, { name: 'orphan' })]);
    expect(b.getState()).toBe(before);
  });

  it('keeps a list array when its elements did not change', () => {
    const b = loaded();
    const before = job(b);
    b.applyRecords([update(JOB, 1, { name: 'Renamed' })]);
    expect(job(b).tasks).toBe(before.tasks);
  });

  it('follows a reordered or extended list', () => {
    const b = loaded();
    b.applyRecords([
      create(TASK, 12, { title: 'C', done: false, labels: [], assignee: null }),
      update(JOB, 1, { tasks: [12, 11, 10] }),
    ]);
    expect(titles(job(b))).toEqual(['C', 'B', 'A']);
  });

  it('removes a deleted instance from every list that held it, before the parents update', () => {
    const b = loaded();
    b.applyRecords([del(LABEL, 101)]);
    const j = job(b);
    expect(j.tasks[0]?.labels.map((l) => l.id)).toEqual([100]);
    expect(j.tasks[1]?.labels).toEqual([]);
    // The parents' updates arrive later and agree.
    b.applyRecords([update(TASK, 10, { labels: [100] }), update(TASK, 11, { labels: [] })]);
    expect(job(b).tasks[0]?.labels.map((l) => l.id)).toEqual([100]);
  });

  it('does not bring a deleted instance back into the lists that dropped it', () => {
    const b = loaded();
    b.applyRecords([del(TASK, 11)]);
    // The same pk comes back (moved back from another anchor) without the parent's update yet.
    b.applyRecords([create(TASK, 11, { title: 'B', done: false, labels: [], assignee: null })]);
    expect(job(b).tasks.map((t) => t.id)).toEqual([10]);
    b.applyRecords([update(JOB, 1, { tasks: [10, 11] })]);
    expect(job(b).tasks.map((t) => t.id)).toEqual([10, 11]);
  });

  it('cleans back-references: deleting a subtree frees its nodes', () => {
    const b = loaded();
    const held = b.size;
    b.applyRecords([del(TASK, 11), del(TASK, 10), del(LABEL, 100), del(LABEL, 101), del(USER, 7)]);
    expect(b.size).toBe(held - 5);
    expect(job(b).tasks).toEqual([]);
  });

  it('clears a single reference whose target is deleted', () => {
    const b = loaded();
    b.applyRecords([del(SPEC, 5)]);
    expect(job(b).spec).toBeNull();
  });

  it('becomes undefined when the anchor of a single channel is deleted', () => {
    const b = loaded();
    b.applyRecords([del(JOB, 1)]);
    expect(b.getState()).toBeUndefined();
  });
});

describe('lastUpdate', () => {
  it('commits the timestamps of a load only at its last end marker', () => {
    const b = builder();
    b.beginLoad([1]);
    b.applyRecords(jobRecords(7));
    expect(b.lastUpdate).toBeNull();
    b.applyRecords([end(8)]);
    expect(b.lastUpdate).toBe(8);
    b.applyRecords([update(TASK, 10, { done: true }, 9.5)]);
    expect(b.lastUpdate).toBe(9.5);
    b.applyRecords([update(TASK, 10, { done: false }, 9.1)]);
    expect(b.lastUpdate).toBe(9.5);
  });
});

describe('reloads', () => {
  it('resync drops the anchor and rebuilds it from the records that follow', () => {
    const b = loaded();
    b.beginLoad([1]);
    b.resync(1);
    b.applyRecords([
      initial(JOB, 1, { name: 'Job', tasks: [11], spec: null }),
      initial(TASK, 11, { title: 'B', done: true, labels: [], assignee: null }),
      end(5),
    ]);
    expect(job(b)).toEqual({
      id: 1,
      name: 'Job',
      spec: null,
      tasks: [{ id: 11, title: 'B', done: true, labels: [], assignee: null }],
    });
    expect(b.getInstance(TASK, 10)).toBeUndefined();
    expect(b.getInstance(LABEL, 100)).toBeUndefined();
  });

  it('resync of one anchor keeps what another anchor shares', () => {
    const b = builder(true);
    b.beginLoad([1, 2]);
    b.applyRecords([
      initial(JOB, 1, { name: 'one', tasks: [], spec: 5 }),
      end(),
      initial(JOB, 2, { name: 'two', tasks: [], spec: 5 }),
      initial(SPEC, 5, { text: 'shared' }),
      end(),
    ]);
    b.beginLoad([1, 2]);
    b.resync(1);
    b.applyRecords([initial(JOB, 1, { name: 'one', tasks: [], spec: null }), end(), end()]);
    expect(jobs(b).map((j) => j.spec)).toEqual([null, { id: 5, text: 'shared' }]);
  });

  it('a full resend without resync drops what the server no longer has', () => {
    const b = loaded();
    b.beginLoad([1]);
    const records = jobRecords(3).filter((r) => !(r._instance_type === TASK && r.id === 11));
    records[0] = initial(JOB, 1, { name: 'Job', tasks: [10], spec: 5 }, 3);
    b.applyRecords([...records, end(3)]);
    expect(job(b).tasks.map((t) => t.id)).toEqual([10]);
    expect(b.getInstance(TASK, 11)).toBeUndefined();
  });
});

describe('many channels', () => {
  function listOf(...ids: number[]): StateBuilder {
    const b = builder(true);
    b.beginLoad(ids);
    for (const id of ids) b.applyRecords([initial(JOB, id, { name: `job${id}`, tasks: [], spec: null }), end()]);
    return b;
  }

  it('lists the anchors in the order of initialAnchors', () => {
    expect(jobs(listOf(3, 1, 2)).map((j) => j.id)).toEqual([3, 1, 2]);
  });

  it('prepends and appends anchors, and drops a deleted anchor', () => {
    const b = listOf(1, 2);
    b.prependAnchor(3);
    b.applyRecords([create(JOB, 3, { name: 'job3', tasks: [], spec: null })]);
    b.appendAnchor(4);
    b.applyRecords([create(JOB, 4, { name: 'job4', tasks: [], spec: null })]);
    expect(jobs(b).map((j) => j.id)).toEqual([3, 1, 2, 4]);
    const before = jobs(b);
    b.applyRecords([del(JOB, 1)]);
    const after = jobs(b);
    expect(after.map((j) => j.id)).toEqual([3, 2, 4]);
    expect(after[0]).toBe(before[0]);
  });

  it('keeps the array identity when no anchor changed', () => {
    const b = listOf(1, 2);
    const before = b.getState();
    b.applyRecords([create(LABEL, 1, { name: 'unrelated' })]);
    expect(b.getState()).toBe(before);
  });
});

describe('large states', () => {
  const N = 10_000;

  function bigLoad(): StateBuilder {
    const b = builder();
    b.beginLoad([1]);
    const ids = Array.from({ length: N }, (_, i) => i + 1);
    const records: InstanceRecord[] = [initial(JOB, 1, { name: 'big', tasks: ids, spec: 5 }), initial(SPEC, 5, { text: 's' })];
    for (const id of ids) records.push(initial(TASK, id, { title: `t${id}`, done: false, labels: [], assignee: null }));
    // Chunked like the server does for big states.
    for (let i = 0; i < records.length; i += 500) b.applyRecords(records.slice(i, i + 500));
    b.applyRecords([end()]);
    return b;
  }

  it('loads 10,000 children of one parent', () => {
    const j = job(bigLoad());
    expect(j.tasks).toHaveLength(N);
    expect(j.tasks[N - 1]?.title).toBe(`t${N}`);
  });

  it('a delta on one child touches only that child and its ancestors', () => {
    const b = bigLoad();
    const before = job(b);
    b.applyRecords([update(TASK, 5000, { title: 'changed' })]);
    const after = job(b);
    expect(after).not.toBe(before);
    expect(after.tasks).not.toBe(before.tasks);
    expect(after.spec).toBe(before.spec);
    let kept = 0;
    for (let i = 0; i < N; i++) if (after.tasks[i] === before.tasks[i]) kept += 1;
    expect(kept).toBe(N - 1);
    expect(after.tasks[4999]?.title).toBe('changed');
  });

  it('builds each instance once per load, not once per record', () => {
    let built = 0;
    const b = new StateBuilder(
      { anchorType: JOB, many: false, model: JobChannel.model },
      { instance: () => (built += 1), list: () => undefined },
    );
    b.beginLoad([1]);
    const ids = Array.from({ length: 1000 }, (_, i) => i + 1);
    b.applyRecords([initial(JOB, 1, { name: 'big', tasks: ids, spec: null })]);
    for (const id of ids) b.applyRecords([initial(TASK, id, { title: 't', done: false, labels: [], assignee: null })]);
    b.applyRecords([end()]);
    b.getState();
    expect(built).toBe(1001);
    b.applyRecords([update(TASK, 3, { title: 'x' })]);
    b.getState();
    expect(built).toBe(1003);
  });
});
