import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { WriteError, isTemporaryId, type CreatableList, type WritableInstance } from '@rxdjango/react/core';
import type { JobType, LabelType, TaskType } from './fixtures/jobs.interfaces';
import { jobHarness, loadJob, type Harness } from './support/channel';
import type { JobChannel } from './fixtures/jobs.channels';
import { JOB, LABEL, TASK, create, jobRecords, update } from './support/records';

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

type Frame = Record<string, unknown>;

function loadedJob(): Harness<JobChannel> & { job: () => JobType; writes: () => Frame[] } {
  const h = jobHarness();
  loadJob(h.socket());
  return {
    ...h,
    job: () => h.channel.state as JobType,
    writes: () => (h.socket().frames() as Frame[]).filter((f) => f.type === 'write'),
  };
}

const ok = (writeId: number, extra: Frame = {}): Frame => ({ type: 'writeResponse', writeId, success: true, ...extra });
const refused = (writeId: number, code = 403, message = 'not allowed'): Frame => ({
  type: 'writeResponse',
  writeId,
  success: false,
  error: { code, message },
});

describe('instance methods', () => {
  it('adds save/delete to writable instances and create to creatable lists, non-enumerable', () => {
    const { job } = loadedJob();
    const task = job().tasks[0] as WritableInstance<TaskType>;
    expect(typeof task.save).toBe('function');
    expect(typeof task.delete).toBe('function');
    expect(typeof (job().tasks as CreatableList<TaskType>).create).toBe('function');
    expect(Object.keys(task)).not.toContain('save');
    expect(JSON.parse(JSON.stringify(job()))).toEqual(job());
    expect(JSON.stringify(task)).toBe(JSON.stringify({ id: 10, title: 'A', done: false, labels: [{ id: 100, name: 'red' }, { id: 101, name: 'blue' }], assignee: { id: 7, username: 'ana' } }));
  });

  it('adds nothing to read-only types', () => {
    const { job } = loadedJob();
    const label = job().tasks[0]?.labels[0] as LabelType & { save?: unknown };
    expect(label.save).toBeUndefined();
    expect((job().tasks[0]?.labels as unknown as { create?: unknown }).create).toBeUndefined();
  });

  it('refuses undeclared operations locally, without a frame', async () => {
    const { channel, writes, job } = loadedJob();
    const before = job();
    await expect(channel.save(LABEL, 100, { name: 'x' })).rejects.toMatchObject({ code: 403 });
    await expect(channel.create(JOB, 1, 'spec', {})).rejects.toMatchObject({ code: 400 });
    expect(writes()).toEqual([]);
    expect(job()).toBe(before);
  });
});

describe('save', () => {
  it('applies at once, sends a write frame, and keeps the value when confirmed', async () => {
    const { socket, writes, job } = loadedJob();
    const task = job().tasks[0] as WritableInstance<TaskType>;
    const saving = task.save({ title: 'New' });
    expect(job().tasks[0]?.title).toBe('New');
    expect(writes()).toEqual([
      { type: 'write', writeId: 1, operation: 'save', instanceType: TASK, instanceId: 10, data: { title: 'New' } },
    ]);
    // The canonical record comes before the response.
    socket().receive([update(TASK, 10, { title: 'New' })]);
    socket().receive(ok(1));
    await expect(saving).resolves.toBeUndefined();
    expect(job().tasks[0]?.title).toBe('New');
  });

  it('rolls back to the previous values when refused', async () => {
    const { channel, socket, job } = loadedJob();
    const before = job();
    const data = { title: 'Nope', done: true };
    const saving = channel.save(TASK, 10, data).catch((e: unknown) => e);
    data.title = 'mutated after the call';
    // A server change to another field rebuilds the task from the kept copy.
    socket().receive([update(TASK, 10, { assignee: null })]);
    expect(job().tasks[0]).toMatchObject({ title: 'Nope', done: true, assignee: null });
    socket().receive(refused(1));
    const error = await saving;
    expect(error).toBeInstanceOf(WriteError);
    expect(error).toMatchObject({ code: 403, message: 'not allowed' });
    expect(job()).toEqual({ ...before, tasks: [{ ...before.tasks[0], assignee: null }, before.tasks[1]] });
    expect(job().tasks[1]).toBe(before.tasks[1]);
  });

  it('keeps server changes received while the write was pending', async () => {
    const { channel, socket, job } = loadedJob();
    const saving = channel.save(TASK, 10, { title: 'Mine' }).catch(() => undefined);
    socket().receive([update(TASK, 10, { done: true }), update(TASK, 11, { title: 'B2' })]);
    expect(job().tasks[0]).toMatchObject({ title: 'Mine', done: true });
    socket().receive(refused(1));
    await saving;
    expect(job().tasks[0]).toMatchObject({ title: 'A', done: true });
    expect(job().tasks[1]?.title).toBe('B2');
  });

  it('lets the server value win over a confirmed write it normalised', async () => {
    const { channel, socket, job } = loadedJob();
    const saving = channel.save(TASK, 10, { title: '  padded  ' });
    socket().receive([update(TASK, 10, { title: 'padded' })]);
    socket().receive(ok(1));
    await saving;
    expect(job().tasks[0]?.title).toBe('padded');
  });

  it('keeps a confirmed value whose record comes after the response', async () => {
    const { channel, socket, job } = loadedJob();
    const saving = channel.save(TASK, 10, { title: 'Early' });
    socket().receive(ok(1));
    await saving;
    expect(job().tasks[0]?.title).toBe('Early');
  });

  it('sends a single relation given as an object as its pk', () => {
    const { channel, writes, job } = loadedJob();
    void channel.save(TASK, 11, { assignee: job().tasks[0]?.assignee ?? null });
    expect(writes()[0]?.data).toEqual({ assignee: 7 });
    expect(job().tasks[1]?.assignee).toEqual({ id: 7, username: 'ana' });
  });

  it('rolls back a write in flight when the socket drops', async () => {
    const { channel, socket, job } = loadedJob();
    const saving = channel.save(TASK, 10, { title: 'Lost' }).catch((e: unknown) => e);
    socket().serverClose(1006);
    expect(await saving).toMatchObject({ code: 503 });
    expect(saving).toBeDefined();
    expect(job().tasks[0]?.title).toBe('A');
  });

  it('rolls back after actionTimeout', async () => {
    const { channel, job } = loadedJob();
    const saving = channel.save(TASK, 10, { title: 'Slow' }).catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(30_000);
    expect(await saving).toMatchObject({ code: 408 });
    expect(job().tasks[0]?.title).toBe('A');
  });
});

describe('delete', () => {
  function sharedLabelJob(): ReturnType<typeof loadedJob> {
    // Task 12 sits in the middle; label 101 is in two lists.
    const h = jobHarness();
    const records = jobRecords();
    records[0] = { ...records[0], id: 1, tasks: [10, 12, 11] } as (typeof records)[0];
    records.push(create(TASK, 12, { title: 'M', done: false, labels: [101], assignee: null }, 1));
    loadJob(h.socket(), records);
    return {
      ...h,
      job: () => h.channel.state as JobType,
      writes: () => (h.socket().frames() as Frame[]).filter((f) => f.type === 'write'),
    };
  }

  it('hides the instance at once and sends the frame', () => {
    const { channel, writes, job } = sharedLabelJob();
    void channel.delete(TASK, 12);
    expect(job().tasks.map((t) => t.id)).toEqual([10, 11]);
    expect(writes()).toEqual([{ type: 'write', writeId: 1, operation: 'delete', instanceType: TASK, instanceId: 12 }]);
  });

  it('puts a refused delete back at its original position', async () => {
    const { socket, job } = sharedLabelJob();
    const deleting = (job().tasks[1] as WritableInstance<TaskType>).delete().catch((e: unknown) => e);
    expect(job().tasks.map((t) => t.id)).toEqual([10, 11]);
    socket().receive(refused(1, 500, 'internal error'));
    expect(await deleting).toMatchObject({ code: 500 });
    expect(job().tasks.map((t) => t.id)).toEqual([10, 12, 11]);
    expect(job().tasks[1]?.labels.map((l) => l.id)).toEqual([101]);
  });

  it('removes the instance for good when confirmed, even before the delete record', async () => {
    const { channel, socket, job } = sharedLabelJob();
    const deleting = channel.delete(TASK, 12);
    socket().receive(ok(1));
    await deleting;
    expect(job().tasks.map((t) => t.id)).toEqual([10, 11]);
    expect(channel.getInstance(TASK, 12)).toBeUndefined();
  });

  it('restores a refused delete even if the list changed meanwhile', async () => {
    const { channel, socket, job } = sharedLabelJob();
    const deleting = channel.delete(TASK, 12).catch(() => undefined);
    socket().receive([create(TASK, 13, { title: 'N', done: false, labels: [], assignee: null }), update(JOB, 1, { tasks: [13, 10, 12, 11] })]);
    expect(job().tasks.map((t) => t.id)).toEqual([13, 10, 11]);
    socket().receive(refused(1));
    await deleting;
    expect(job().tasks.map((t) => t.id)).toEqual([13, 10, 12, 11]);
  });
});

describe('create', () => {
  it('shows a temporary instance at the end of the list and sends the frame', () => {
    const { writes, job } = loadedJob();
    void (job().tasks as CreatableList<TaskType>).create({ title: 'C', done: false });
    const tasks = job().tasks;
    expect(tasks).toHaveLength(3);
    expect(isTemporaryId(tasks[2]?.id)).toBe(true);
    expect(tasks[2]).toMatchObject({ title: 'C', done: false, labels: [], assignee: null });
    expect(writes()).toEqual([
      {
        type: 'write',
        writeId: 1,
        operation: 'create',
        instanceType: TASK,
        parentType: JOB,
        parentId: 1,
        relationName: 'tasks',
        data: { title: 'C', done: false },
      },
    ]);
  });

  it('resolves with the real id and replaces the temporary instance', async () => {
    const { channel, socket, job } = loadedJob();
    const creating = channel.create(JOB, 1, 'tasks', { title: 'C', done: false });
    // Canonical records first, then the response.
    socket().receive([create(TASK, 42, { title: 'C', done: false, labels: [], assignee: null }), update(JOB, 1, { tasks: [10, 11, 42] })]);
    socket().receive(ok(1, { instanceId: 42 }));
    await expect(creating).resolves.toBe(42);
    expect(job().tasks.map((t) => t.id)).toEqual([10, 11, 42]);
  });

  it('never shows the new instance twice while its records precede the reply', async () => {
    const { channel, socket, job } = loadedJob();
    const creating = channel.create(JOB, 1, 'tasks', { title: 'C', done: false });
    expect(job().tasks).toHaveLength(3);
    socket().receive([create(TASK, 42, { title: 'C', done: false, labels: [], assignee: null }), update(JOB, 1, { tasks: [10, 11, 42] })]);
    // Between the records and the reply: the real instance in place of the temporary one.
    expect(job().tasks.map((t) => t.id)).toEqual([10, 11, 42]);
    socket().receive(ok(1, { instanceId: 42 }));
    await expect(creating).resolves.toBe(42);
    expect(job().tasks.map((t) => t.id)).toEqual([10, 11, 42]);
  });

  it('keeps one entry per pending create when another client creates meanwhile', async () => {
    const { channel, socket, job } = loadedJob();
    const first = channel.create(JOB, 1, 'tasks', { title: 'C', done: false });
    const second = channel.create(JOB, 1, 'tasks', { title: 'D', done: false });
    expect(job().tasks).toHaveLength(4);
    // Someone else's task lands first: the oldest pending create gives way to it.
    socket().receive([create(TASK, 41, { title: 'X', done: false, labels: [], assignee: null }), update(JOB, 1, { tasks: [10, 11, 41] })]);
    expect(job().tasks.map((t) => t.title)).toEqual(['A', 'B', 'X', 'D']);
    socket().receive([create(TASK, 42, { title: 'C', done: false, labels: [], assignee: null }), update(JOB, 1, { tasks: [10, 11, 41, 42] })]);
    socket().receive(ok(1, { instanceId: 42 }));
    await expect(first).resolves.toBe(42);
    expect(job().tasks.map((t) => t.title)).toEqual(['A', 'B', 'X', 'C', 'D']);
    expect(isTemporaryId(job().tasks[4]?.id)).toBe(true);
    socket().receive(refused(2, 400, 'invalid data'));
    await expect(second).rejects.toMatchObject({ code: 400 });
    expect(job().tasks.map((t) => t.id)).toEqual([10, 11, 41, 42]);
  });

  it('shows the pending creates again once an earlier one is refused', async () => {
    const { channel, socket, job } = loadedJob();
    const first = channel.create(JOB, 1, 'tasks', { title: '' }).catch((e: unknown) => e);
    void channel.create(JOB, 1, 'tasks', { title: 'D', done: false });
    socket().receive([create(TASK, 41, { title: 'X', done: false, labels: [], assignee: null }), update(JOB, 1, { tasks: [10, 11, 41] })]);
    socket().receive(refused(1, 400, 'invalid data'));
    await expect(first).resolves.toMatchObject({ code: 400 });
    expect(job().tasks.map((t) => t.title)).toEqual(['A', 'B', 'X', 'D']);
  });

  it('keeps the created instance under its real id when the records come later', async () => {
    const { channel, socket, job } = loadedJob();
    const creating = channel.create(JOB, 1, 'tasks', { title: 'C', done: false });
    socket().receive(ok(1, { instanceId: 42 }));
    await expect(creating).resolves.toBe(42);
    expect(job().tasks.map((t) => t.id)).toEqual([10, 11, 42]);
    socket().receive([create(TASK, 42, { title: 'C!', done: false, labels: [], assignee: null }), update(JOB, 1, { tasks: [10, 11, 42] })]);
    expect(job().tasks.map((t) => t.title)).toEqual(['A', 'B', 'C!']);
    const saving = (job().tasks[2] as WritableInstance<TaskType>).save({ done: true });
    expect(job().tasks[2]?.done).toBe(true);
    socket().receive(ok(2));
    await saving;
  });

  it('removes the temporary instance when refused', async () => {
    const { channel, socket, job } = loadedJob();
    const before = job();
    const creating = channel.create(JOB, 1, 'tasks', { title: '' }).catch((e: unknown) => e);
    socket().receive({ type: 'writeResponse', writeId: 1, success: false, error: { code: 400, message: 'invalid data', detail: { title: ['required'] } } });
    const error = await creating;
    expect(error).toMatchObject({ code: 400, detail: { title: ['required'] } });
    expect(job()).toEqual(before);
    expect(job().tasks).toHaveLength(2);
  });

  it('refuses writes on a temporary instance until its create is confirmed', async () => {
    const { channel, job } = loadedJob();
    void channel.create(JOB, 1, 'tasks', { title: 'C' }).catch(() => undefined);
    const temp = job().tasks[2] as WritableInstance<TaskType>;
    await expect(temp.save({ title: 'D' })).rejects.toMatchObject({ code: 409 });
    await expect(channel.create(TASK, temp.id, 'labels', {})).rejects.toMatchObject({ code: 403 });
  });
});
