// Compiled with the generated files under `tsc --strict`: the generated types must be
// precise enough for this to type-check, and for each @ts-expect-error to be an error.
import type { ChannelSnapshot } from "@rxdjango/react";
import { JobChannel, type JobChannelRuntimeState, ProjectJobsChannel } from "./jobs.channels";
import type { JobBriefType, JobType, TaskFilter, TaskType } from "./jobs.interfaces";

const job = new JobChannel(1, "token", { baseURL: "ws://127.0.0.1:8000/" });
const snapshot: ChannelSnapshot<JobType | undefined, JobChannelRuntimeState> = job.getSnapshot();
const tasks: TaskType[] | undefined = snapshot.state?.tasks;
const viewers: number = snapshot.runtimeState.viewers;
const banner: string | null = snapshot.runtimeState.banner;
const budget: string | undefined = snapshot.state?.budget;

const filters: TaskFilter = { done: true };
const count: Promise<number> = job.countTasks(filters);
const countAll: Promise<number> = job.countTasks();
const scheduled: Promise<Record<string, string>> = job.schedule(3, "2026-12-01", ["a"]);

// @ts-expect-error: task ids are numbers
job.schedule("3", "2026-12-01");
// @ts-expect-error: TaskFilter has no such key
job.countTasks({ colour: "red" });
// @ts-expect-error: the route parameter is required
new JobChannel("token");

const list = new ProjectJobsChannel(7, "token");
const jobs: JobBriefType[] = list.getSnapshot().state;

export { budget, count, countAll, jobs, scheduled, tasks, viewers, banner };
