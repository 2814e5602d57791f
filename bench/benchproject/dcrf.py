"""The DCRF peer: instance observers and CRUD actions on the same models and serializers."""

from djangochannelsrestframework.generics import GenericAsyncAPIConsumer
from djangochannelsrestframework.mixins import PatchModelMixin, RetrieveModelMixin
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


class JobConsumer(RetrieveModelMixin, GenericAsyncAPIConsumer):
    """`retrieve` of the whole nested job, with the REST endpoint's queryset."""

    queryset = JobDetail.queryset
    serializer_class = JobSerializer
    permission_classes = (AllowAny,)
