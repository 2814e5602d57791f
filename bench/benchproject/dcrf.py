"""The DCRF peer: instance observers and CRUD actions on the same models and serializers.

Two ways DCRF's documentation offers to watch a task: ``ObserverModelInstanceMixin``
(``subscribe_instance``; serializes the instance for each subscriber) and a
``model_observer`` with a serializer and per-instance groups (serializes once per
change, however many subscribers: what a performance-minded DCRF user writes).
"""

from typing import Any

from djangochannelsrestframework.decorators import action
from djangochannelsrestframework.generics import GenericAsyncAPIConsumer
from djangochannelsrestframework.mixins import PatchModelMixin, RetrieveModelMixin
from djangochannelsrestframework.observer import model_observer
from djangochannelsrestframework.observer.generics import ObserverModelInstanceMixin
from rest_framework.permissions import AllowAny

from .urls import JobDetail
from jobs.models import Task
from jobs.serializers import JobSerializer, TaskSerializer


class TaskConsumer(ObserverModelInstanceMixin, PatchModelMixin, GenericAsyncAPIConsumer):
    """Clients subscribe to a task (`subscribe_instance`) and patch it."""

    queryset = Task.objects.all()
    serializer_class = TaskSerializer
    permission_classes = (AllowAny,)


class TaskGroupConsumer(PatchModelMixin, GenericAsyncAPIConsumer):
    """Clients subscribe to one task's group (`subscribe_to_task`) and patch it; each
    change is serialized once and sent to the group."""

    queryset = Task.objects.all()
    serializer_class = TaskSerializer
    permission_classes = (AllowAny,)

    @model_observer(Task)
    async def task_changes(
        self, message: dict[str, Any], observer: Any = None, subscribing_request_ids=(), **kwargs
    ) -> None:
        for request_id in subscribing_request_ids:
            await self.send_json({"action": "task_changes", "request_id": request_id, **message})

    @task_changes.serializer
    def task_changes(self, instance: Task, action: Any, **kwargs: Any) -> dict[str, Any]:
        return {"data": TaskSerializer(instance).data, "change": action.value}

    @task_changes.groups_for_signal
    def task_changes(self, instance: Task, **kwargs: Any):
        yield f"-pk__{instance.pk}"

    @task_changes.groups_for_consumer
    def task_changes(self, pk: int | None = None, **kwargs: Any):
        if pk is not None:
            yield f"-pk__{pk}"

    @action()
    async def subscribe_to_task(self, pk: int, request_id: Any, **kwargs: Any):
        await self.task_changes.subscribe(pk=pk, request_id=request_id)
        return {}, 201


class JobConsumer(RetrieveModelMixin, GenericAsyncAPIConsumer):
    """`retrieve` of the whole nested job, with the REST endpoint's queryset."""

    queryset = JobDetail.queryset
    serializer_class = JobSerializer
    permission_classes = (AllowAny,)
