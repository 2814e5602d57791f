// The client's state builder in Node: a load of N task records under one job, then
// single deltas. Prints JSON (milliseconds). Usage: node bench/client_bench.mjs [N]
import { performance } from "node:perf_hooks";
import { StateBuilder } from "../client/dist/core.js";

const JOB = "jobs.serializers.JobSerializer";
const TASK = "jobs.serializers.TaskSerializer";
const model = { [JOB]: { tasks: { type: TASK, many: true } }, [TASK]: {} };
const N = Number(process.argv[2] ?? 10000);
const ids = Array.from({ length: N }, (_, i) => i + 1);
const records = [
  { id: 1, _instance_type: JOB, _tstamp: 1, _operation: "initial_state", title: "big", tasks: ids },
  ...ids.map((id) => ({
    id, _instance_type: TASK, _tstamp: 1, _operation: "initial_state", title: `task ${id}`, done: false,
  })),
  { id: 0, _instance_type: "", _tstamp: 1, _operation: "end_initial_state" },
];

function percentile(values, p) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.round((p / 100) * (sorted.length - 1)))];
}

function load() {
  const builder = new StateBuilder({ anchorType: JOB, many: false, model });
  builder.beginLoad([1]);
  for (let i = 0; i < records.length; i += 500) builder.applyRecords(records.slice(i, i + 500));
  builder.getState();
  return builder;
}

const loads = [];
for (let run = 0; run < 15; run += 1) {
  const started = performance.now();
  load();
  loads.push(performance.now() - started);
}
const builder = load();
const deltas = [];
for (let k = 0; k < 200; k += 1) {
  const id = (k % N) + 1;
  const started = performance.now();
  builder.applyRecords([{ id, _instance_type: TASK, _tstamp: 2 + k, _operation: "update", title: `t${k}` }]);
  builder.getState();
  deltas.push(performance.now() - started);
}
const stats = (values) => ({ p50_ms: percentile(values, 50), p99_ms: percentile(values, 99), samples: values.length });
process.stdout.write(JSON.stringify({ records: N, load: stats(loads.slice(3)), delta: stats(deltas) }));
