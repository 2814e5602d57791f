import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, expectTypeOf, it } from 'vitest';
import * as core from '@rxdjango/react/core';
import * as root from '@rxdjango/react';
import type { ChannelState } from '@rxdjango/react';
import { JobChannel, JobListChannel } from './fixtures/jobs.channels';
import type { JobType, TaskType } from './fixtures/jobs.interfaces';

const CORE_VALUES = [
  'ActionError',
  'ClientErrorCode',
  'CloseCode',
  'ConfigurationError',
  'ConnectionError',
  'ContextChannel',
  'MessageType',
  'NOTIFICATION_TYPE',
  'Operation',
  'RxDjangoError',
  'StateBuilder',
  'StatusCode',
  'TERMINAL_STATUSES',
  'WriteError',
  'isTemporaryId',
];
const HOOKS = ['useChannel', 'useChannelEvent', 'useChannelInstance', 'useChannelState', 'useInstance'];

describe('public API', () => {
  it('pins the names exported by the core', () => {
    expect(Object.keys(core).sort()).toEqual(CORE_VALUES);
  });

  it('root re-exports the core and adds the hooks', () => {
    expect(Object.keys(root).sort()).toEqual([...CORE_VALUES, ...HOOKS].sort());
  });

  it('types the state of single and many channels', () => {
    expectTypeOf<ChannelState<JobType>>().toEqualTypeOf<JobType | undefined>();
    expectTypeOf<ChannelState<JobType[]>>().toEqualTypeOf<JobType[]>();
    const single = new JobChannel(1, 't');
    const many = new JobListChannel('t');
    expectTypeOf(single.state).toEqualTypeOf<JobType | undefined>();
    expectTypeOf(many.state).toEqualTypeOf<JobType[]>();
    expectTypeOf(single.runtimeState.counter).toEqualTypeOf<number>();
    expectTypeOf(single.renameTask(1, 'x')).toEqualTypeOf<Promise<null>>();
  });

  it("types the original client's snapshot fields and useChannelInstance", () => {
    const snapshot = new JobListChannel('t').getSnapshot();
    expectTypeOf(snapshot.state).toEqualTypeOf<JobType[]>();
    expectTypeOf(snapshot.connected).toEqualTypeOf<boolean>();
    expectTypeOf(snapshot.noConnectionSince).toEqualTypeOf<Date | undefined>();
    expectTypeOf(snapshot.no_connection_since).toEqualTypeOf<Date | undefined>();
    expectTypeOf(snapshot.empty).toEqualTypeOf<boolean>();
    expectTypeOf<ReturnType<typeof root.useChannelInstance<TaskType>>>().toEqualTypeOf<TaskType | null | undefined>();
    expectTypeOf<ReturnType<typeof root.useChannelInstance<JobType, TaskType>>>().toEqualTypeOf<
      TaskType | null | undefined
    >();
  });
});

describe('framework-free core', () => {
  const src = resolve(dirname(fileURLToPath(import.meta.url)), '../src');

  /** Every bare module specifier imported by `file` and the local modules it reaches. */
  function externalImports(file: string, seen = new Set<string>()): Set<string> {
    const found = new Set<string>();
    if (seen.has(file)) return found;
    seen.add(file);
    const text = readFileSync(file, 'utf8');
    for (const match of text.matchAll(/^\s*(?:import|export)[^'"]*?from\s+['"]([^'"]+)['"]|\bimport\(\s*['"]([^'"]+)['"]\s*\)/gm)) {
      const spec = match[1] ?? match[2] ?? '';
      if (spec.startsWith('.')) {
        for (const name of externalImports(join(dirname(file), `${spec}.ts`), seen)) found.add(name);
      } else {
        found.add(spec);
      }
    }
    return found;
  }

  it('imports nothing outside the package (no React)', () => {
    expect([...externalImports(join(src, 'core.ts'))]).toEqual([]);
  });

  it('only react.ts imports React', () => {
    expect([...externalImports(join(src, 'index.ts'))]).toEqual(['react']);
  });
});

describe('names left to generated subclasses', () => {
  it('keeps the base class internals out of the subclass namespace', () => {
    // A generated action may be called `publish`, `receive`, `release`...:
    // only the public API below is taken on ContextChannel instances.
    const members = new Set<string>();
    for (let proto: object | null = core.ContextChannel.prototype; proto && proto !== Object.prototype; proto = Object.getPrototypeOf(proto) as object | null) {
      for (const name of Object.getOwnPropertyNames(proto)) members.add(name);
    }
    const instance = new JobChannel(1, 't');
    for (const name of Object.keys(instance)) members.add(name);
    expect([...members].filter((n) => n !== 'constructor').sort()).toEqual(
      [
        'callAction',
        'connect',
        'create',
        'delete',
        'disconnect',
        'getInstance',
        'getSnapshot',
        'lastUpdate',
        'on',
        'path',
        'reconnect',
        'runtimeState',
        'save',
        'state',
        'status',
        'subscribe',
        'url',
      ].sort(),
    );
  });
});
