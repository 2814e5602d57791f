/** Builders of wire records and messages for tests. */
import type { Id, InstanceRecord } from '@rxdjango/react/core';

export const JOB = 'jobs.serializers.JobSerializer';
export const TASK = 'jobs.serializers.TaskSerializer';
export const LABEL = 'jobs.serializers.LabelSerializer';
export const SPEC = 'jobs.serializers.JobSpecSerializer';
export const USER = 'jobs.serializers.UserSerializer';

type Op = InstanceRecord['_operation'];

export function rec(type: string, id: Id, fields: Record<string, unknown> = {}, op: Op = 'initial_state', tstamp = 1): InstanceRecord {
  return { id, _instance_type: type, _tstamp: tstamp, _operation: op, ...fields };
}

export const initial = (type: string, id: Id, fields: Record<string, unknown> = {}, tstamp = 1): InstanceRecord =>
  rec(type, id, fields, 'initial_state', tstamp);
export const create = (type: string, id: Id, fields: Record<string, unknown> = {}, tstamp = 2): InstanceRecord =>
  rec(type, id, fields, 'create', tstamp);
export const update = (type: string, id: Id, fields: Record<string, unknown> = {}, tstamp = 2): InstanceRecord =>
  rec(type, id, fields, 'update', tstamp);
export const del = (type: string, id: Id, tstamp = 2): InstanceRecord => ({
  id,
  _instance_type: type,
  _tstamp: tstamp,
  _operation: 'delete',
  _deleted: true,
});
export const end = (tstamp = 1): InstanceRecord => ({ id: 0, _instance_type: '', _tstamp: tstamp, _operation: 'end_initial_state' });

/** A job 1 with tasks 10, 11 (labels 100, 101 shared), spec 5, user 7 assigned to task 10. */
export function jobRecords(tstamp = 1): InstanceRecord[] {
  return [
    initial(JOB, 1, { name: 'Job', tasks: [10, 11], spec: 5 }, tstamp),
    initial(TASK, 10, { title: 'A', done: false, labels: [100, 101], assignee: 7 }, tstamp),
    initial(TASK, 11, { title: 'B', done: false, labels: [101], assignee: null }, tstamp),
    initial(LABEL, 100, { name: 'red' }, tstamp),
    initial(LABEL, 101, { name: 'blue' }, tstamp),
    initial(SPEC, 5, { text: 'spec' }, tstamp),
    initial(USER, 7, { username: 'ana' }, tstamp),
  ];
}

export const auth = (statusCode = 200, error?: string): Record<string, unknown> =>
  error === undefined ? { type: 'auth', statusCode } : { type: 'auth', statusCode, error };
export const anchors = (...anchorIds: Id[]): Record<string, unknown> => ({ type: 'initialAnchors', anchorIds });
