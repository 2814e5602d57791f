/**
 * State builder cost on a large state: `npm run bench` (vitest bench).
 *
 * - "initial load": 10,000 tasks under one job, applied in 500-record
 *   frames as the server chunks them, then the end marker and the build.
 * - "one delta": one task update on that loaded state, then the rebuild
 *   (the task, the job's task array and the job; every other task is reused).
 */
import { bench, describe } from 'vitest';
import { StateBuilder, type InstanceRecord } from '../src/core';

const JOB = 'jobs.serializers.JobSerializer';
const TASK = 'jobs.serializers.TaskSerializer';
const LABEL = 'jobs.serializers.LabelSerializer';
const model = {
  [JOB]: { tasks: { type: TASK, many: true } },
  [TASK]: { labels: { type: LABEL, many: true } },
  [LABEL]: {},
};
const N = 10_000;

function records(): InstanceRecord[] {
  const ids = Array.from({ length: N }, (_, i) => i + 1);
  const out: InstanceRecord[] = [
    { id: 1, _instance_type: JOB, _tstamp: 1, _operation: 'initial_state', name: 'big', tasks: ids },
    { id: 1, _instance_type: LABEL, _tstamp: 1, _operation: 'initial_state', name: 'shared' },
  ];
  for (const id of ids) {
    out.push({ id, _instance_type: TASK, _tstamp: 1, _operation: 'initial_state', title: `task ${id}`, done: false, labels: [1] });
  }
  out.push({ id: 0, _instance_type: '', _tstamp: 1, _operation: 'end_initial_state' });
  return out;
}

const RECORDS = records();

function load(): StateBuilder {
  const builder = new StateBuilder({ anchorType: JOB, many: false, model });
  builder.beginLoad([1]);
  for (let i = 0; i < RECORDS.length; i += 500) builder.applyRecords(RECORDS.slice(i, i + 500));
  builder.getState();
  return builder;
}

describe(`state builder, ${N.toLocaleString('en')} tasks under one job`, () => {
  bench('initial load (apply + build)', () => {
    load();
  });

  const loaded = load();
  let n = 0;
  bench('one delta on the loaded state (apply + rebuild)', () => {
    n += 1;
    loaded.applyRecords([{ id: (n % N) + 1, _instance_type: TASK, _tstamp: 2, _operation: 'update', title: `t${n}` }]);
    loaded.getState();
  });
});
