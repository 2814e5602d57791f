"""Channels written in the original RxDjango's documented style: awaited calls,
``send(text_data=...)`` in a ``@consumer``, its exception names, ``anchor_ids``."""

import json
from typing import TypedDict

from channels.db import database_sync_to_async

from rxdjango.actions import action
from rxdjango.channels import ContextChannel
from rxdjango.consumers import consumer
from rxdjango.exceptions import ForbiddenError, UnauthorizedError, WriteError
from rxdjango.operations import DELETE, SAVE

from .models import Item, Order
from .serializers import ItemSerializer, OrderSerializer


def _may_open(user, order_id) -> bool:
    if user.username == "mallory":
        raise UnauthorizedError()
    if not Order.objects.filter(pk=order_id).exists():
        return True  # the library answers 404 for a missing anchor
    if not Order.objects.filter(pk=order_id, customer=user).exists():
        raise ForbiddenError("not your order")
    return True


class OrderChannel(ContextChannel):
    class Meta:
        state = OrderSerializer()
        writable = {ItemSerializer: [SAVE, DELETE]}

    class RuntimeState(TypedDict):
        viewers: int
        note: str

    @staticmethod
    def has_permission(user, order_id):
        return _may_open(user, order_id)

    async def on_connect(self, tstamp):
        await self.set_runtime_var("viewers", 1)
        await self.group_add(f"order-{self.anchor_ids[0]}")

    @consumer("shop.announce")
    async def announce(self, event):
        await self.send(text_data=json.dumps({"type": "announcement", "text": event["text"]}))

    @consumer("shop.raw")
    async def raw(self, event):
        await self.send(bytes_data=event["payload"])

    def can_save(self, instance, data):
        if data.get("price") is not None and data["price"] < 0:
            raise WriteError("a price cannot be negative")
        return data.get("name") != "refused"

    def can_delete(self, instance):
        raise ForbiddenError("items are never deleted here")

    @action
    async def note(self, text: str) -> dict:
        await self.set_runtime_var("note", text)
        return self.runtime_state

    @action
    async def anchors(self) -> list:
        return self.anchor_ids

    @action
    async def recache(self) -> bool:
        return await OrderChannel.clear_cache(self.anchor_ids[0])

    @action
    async def reprice(self, item_id: int, price: str) -> None:
        """Changes a price behind the ORM's signals, then broadcasts it, awaited."""
        await database_sync_to_async(Item.objects.filter(pk=item_id).update)(price=price)
        item = await database_sync_to_async(Item.objects.get)(pk=item_id)
        await OrderChannel.broadcast_instance(self.anchor_ids[0], item)

    @action
    async def shout(self, text: str) -> None:
        await OrderChannel.broadcast_notification(self.anchor_ids[0], {"text": text})

    @action
    async def close_order(self) -> None:
        raise ForbiddenError("only the shop may close an order")


class CustomerOrdersChannel(ContextChannel):
    class Meta:
        state = OrderSerializer(many=True)

    @staticmethod
    def has_permission(user, customer_id):
        return user.pk == customer_id

    async def list_instances(self, customer_id):
        return Order.objects.filter(customer_id=customer_id).order_by("id")

    @action
    async def add(self, order_id: int) -> bool:
        return await self.add_instance(order_id)

    @action
    async def remove(self, order_id: int) -> bool:
        return await self.remove_instance(order_id)

    @action
    async def clear_all(self) -> None:
        await self.clear()
