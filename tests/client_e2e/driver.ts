// Drives the built client in Node against a real server of the test project.
// Prints one JSON line per step; reads commands from stdin ("title <id> <text>": wait
// until that task has that title).
import * as readline from "node:readline";
import WebSocket from "ws";
import { ActionError, type WebSocketConstructor, WriteError } from "@rxdjango/react/core";
import { JobChannel } from "./jobs.channels";
import type { JobType } from "./jobs.interfaces";

const [baseURL, jobArg, token, firstTaskArg, secondTaskArg] = process.argv.slice(2);
const jobId = Number(jobArg);
const firstTask = Number(firstTaskArg);
const secondTask = Number(secondTaskArg);
const TASK = "jobs.serializers.TaskSerializer";

const channel = new JobChannel(jobId, token ?? "", {
  baseURL,
  WebSocket: WebSocket as unknown as WebSocketConstructor,
  actionTimeout: 10_000,
});

function emit(event: string, body: Record<string, unknown> = {}): void {
  process.stdout.write(JSON.stringify({ event, ...body }) + "\n");
}

function until(check: (state: JobType | undefined) => boolean, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      stop();
      reject(new Error(`timed out waiting for ${what}`));
    }, 10_000);
    const test = (): boolean => {
      const snapshot = channel.getSnapshot();
      if (snapshot.ready && check(snapshot.state)) {
        clearTimeout(timer);
        stop();
        resolve();
        return true;
      }
      return false;
    };
    const stop = channel.subscribe(() => {
      test();
    });
    test();
  });
}

const titleOf = (state: JobType | undefined, id: number): string | undefined =>
  state?.tasks.find((task) => task.id === id)?.title;

async function main(): Promise<void> {
  const keepOpen = channel.subscribe(() => undefined);
  await until(() => true, "the initial state");
  emit("ready", { tasks: channel.getSnapshot().state?.tasks.length });

  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    const [command, id, ...words] = line.split(" ");
    if (command === "title") {
      await until((state) => titleOf(state, Number(id)) === words.join(" "), line);
      emit("saw", { line });
    } else if (command === "go") {
      break;
    }
  }

  const pending = await channel.countTasks({ done: false });
  const all = await channel.countTasks();
  const scheduled = await channel.schedule(firstTask, "2026-12-01", ["a", "b"]);
  let rejected: unknown = null;
  try {
    await channel.callAction("not_an_action", []);
  } catch (error) {
    rejected = error instanceof ActionError ? error.code : String(error);
  }
  emit("actions", { pending, all, scheduled, rejected });

  const saving = channel.save(TASK, firstTask, { title: "saved from node" });
  const optimistic = titleOf(channel.getSnapshot().state, firstTask);
  await saving;
  await until((state) => titleOf(state, firstTask) === "saved from node", "the save");

  let refused: unknown = null;
  const before = titleOf(channel.getSnapshot().state, secondTask);
  try {
    await channel.save(TASK, secondTask, { title: "forbidden" });
  } catch (error) {
    refused = error instanceof WriteError ? error.code : String(error);
  }
  const rolledBack = titleOf(channel.getSnapshot().state, secondTask) === before;

  const created = await channel.create("jobs.serializers.JobSerializer", jobId, "tasks", {
    title: "created from node",
  });
  await until((state) => titleOf(state, Number(created)) === "created from node", "the create");
  await channel.delete(TASK, secondTask);
  await until((state) => titleOf(state, secondTask) === undefined, "the delete");
  emit("writes", { optimistic, refused, rolledBack, created });

  emit("final", { state: channel.getSnapshot().state });
  keepOpen();
  channel.disconnect();
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    emit("failed", { error: String(error) });
    process.exit(1);
  },
);
