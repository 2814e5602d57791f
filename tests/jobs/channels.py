import asyncio
import datetime
from typing import TypedDict

from channels.db import database_sync_to_async

from rxdjango.actions import action
from rxdjango.channels import ContextChannel
from rxdjango.operations import CREATE, DELETE, SAVE

from .blocking import wait_at_write_gate
from .models import Job, Participant, Task
from .serializers import (
    AssetSerializer,
    JobBriefSerializer,
    JobSerializer,
    LabelDetailSerializer,
    NoteCommentSerializer,
    NoteReactionSerializer,
    NoteSerializer,
    TaskSerializer,
)


class TaskFilter(TypedDict, total=False):
    done: bool
    title: str


class JobChannel(ContextChannel):
    """One job and everything under it; open to the participants of its project."""

    class Meta:
        state = JobSerializer()
        writable = {
            JobSerializer: [SAVE],
            TaskSerializer: [SAVE, CREATE, DELETE],
            NoteSerializer: [SAVE, CREATE, DELETE],
            NoteCommentSerializer: [SAVE, CREATE],
            NoteReactionSerializer: [SAVE, CREATE],
            AssetSerializer: [CREATE],
        }

    @staticmethod
    def has_permission(user, job_id):
        if user.is_staff:
            return True
        return Participant.objects.filter(user=user, project__jobs__pk=job_id).exists()

    def can_save(self, instance, data):
        wait_at_write_gate(data)
        return data.get("title") != "forbidden"

    def can_create(self, model_class, parent, data):
        return "forbidden" not in (data.get("title"), data.get("name"), data.get("text"))

    def can_delete(self, instance):
        return not getattr(instance, "done", False)

    class RuntimeState(TypedDict):
        viewers: int
        banner: str | None

    @action
    async def count_tasks(self, filters: TaskFilter | None = None) -> int:
        """How many tasks of this job match ``filters``."""
        query = {"job_id": self.kwargs["job_id"]}
        if filters and "done" in filters:
            query["done"] = filters["done"]
        return await database_sync_to_async(Task.objects.filter(**query).count)()

    @action
    async def schedule(
        self, task_id: int, due: datetime.date, tags: list[str] | None = None
    ) -> dict[str, str]:
        """Echo what would be scheduled (dates and lists travel typed)."""
        return {"task": str(task_id), "due": due.isoformat(), "tags": ",".join(tags or [])}

    @action
    async def rename_repeatedly(self, task_id: int, times: int, prefix: str) -> int:
        """Commit ``times`` renames of a task, one transaction each (a stream of changes);
        titles are padded to the field's 100 characters."""

        def rename() -> int:
            task = Task.objects.get(pk=task_id, job_id=self.kwargs["job_id"])
            for index in range(times):
                task.title = f"{prefix}{index:05d}".ljust(100, "-")
                task.save(update_fields=["title"])
            return times

        return await database_sync_to_async(rename)()

    @action(detached=True)
    async def linger(self, seconds: float) -> float:
        """Take a while without holding up the connection (a detached action)."""
        await asyncio.sleep(seconds)
        return seconds


class ProjectJobsChannel(ContextChannel):
    """The jobs of one project, as a list channel."""

    class Meta:
        state = JobBriefSerializer(many=True)

    def list_instances(self, project_id):
        return Job.objects.filter(project_id=project_id).order_by("id")


class LabelChannel(ContextChannel):
    class Meta:
        state = LabelDetailSerializer()
