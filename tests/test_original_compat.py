"""A project written for the original RxDjango runs unchanged (``tests/shop``).

The ``shop`` app is written in the original's documented style: awaited channel
calls, ``send(text_data=...)`` in a ``@consumer``, ``decorators.related_property``
with an accessor, its exception names, ``self.anchor_ids``. The protocol tests check
what the original client relies on: each anchor's own record first in every initial
state, and a refused write followed by the record as it is, before the reply.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import pytest
import websockets
from channels.db import database_sync_to_async as db
from rest_framework import serializers
from shop.channels import OrderChannel
from shop.models import Item, Order
from shop.serializers import OrderSerializer

from rxdjango import _codec, _layers
from rxdjango.actions import action
from rxdjango.channels import ContextChannel
from rxdjango.decorators import related_property, reverse_path
from rxdjango.exceptions import (
    ActionNotAsync,
    AnchorDoesNotExist,
    ChannelDeclarationError,
    ForbiddenError,
    RxDjangoBug,
    RxDjangoError,
    UnauthorizedError,
    UnknownProperty,
    WriteError,
)
from rxdjango.testing import ChannelCommunicator, timeout

from support import deployment, make_user, until

pytestmark = pytest.mark.django_db(transaction=True)

ORDER = "shop.serializers.OrderSerializer"
ITEM = "shop.serializers.ItemSerializer"
BACKENDS = ["embedded", "redis"]


def make_shop(items_per_order: int = 3) -> dict[str, Any]:
    alice, alice_token = make_user("alice")
    bob, bob_token = make_user("bob")
    _mallory, mallory_token = make_user("mallory")
    orders = []
    for n in range(3):
        order = Order.objects.create(name=f"order {n}", customer=alice)
        for i in range(items_per_order):
            Item.objects.create(order=order, name=f"item {n}.{i}", price=Decimal(f"{i + 1}.50"))
        orders.append(order)
    return {
        "alice": alice,
        "bob": bob,
        "orders": orders,
        "tokens": {"alice": alice_token, "bob": bob_token, "mallory": mallory_token},
    }


@pytest.fixture
async def shop(transactional_db) -> dict[str, Any]:
    return await db(make_shop)()


async def connected(application, path: str, token: str, channel=OrderChannel, **kwargs):
    client = ChannelCommunicator(application, path, token=token, channel=channel, **kwargs)
    assert await client.authenticate() == {"type": "auth", "statusCode": 200}
    await client.initial_state()
    return client


async def call(client: ChannelCommunicator, call_id: int, name: str, *params: Any) -> dict:
    await client.send_frame({"callId": call_id, "action": name, "params": list(params)})
    while True:
        frame = await client.receive_frame()
        if isinstance(frame, dict) and frame.get("callId") == call_id:
            return frame


def order_tree(order_pk: int) -> dict:
    return _codec.decode(_codec.encode(OrderSerializer(Order.objects.get(pk=order_pk)).data))


# -- each anchor's own record first, in every initial state, on both backends -----------------


class RawClient:
    """A WebSocket client that keeps every record in arrival order, split at end markers."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self.sections: list[list[dict]] = [[]]
        self.controls: list[dict] = []
        self.last_update: float | None = None

    async def open(self, last_update: float | None = None) -> None:
        self.ws = await websockets.connect(self.url, max_size=2**22)
        await self.ws.send(_codec.encode({"token": self.token, "lastUpdate": last_update}))
        assert await self.frame() == {"type": "auth", "statusCode": 200}

    async def frame(self) -> Any:
        frame = _codec.decode(await asyncio.wait_for(self.ws.recv(), timeout()))
        if isinstance(frame, dict):
            self.controls.append(frame)
            return frame
        for record in frame:
            if record["_operation"] == "end_initial_state":
                self.last_update = record["_tstamp"]
                self.sections.append([])
            else:
                self.sections[-1].append(record)
        return frame

    async def until_sections(self, count: int) -> list[list[dict]]:
        """Read until ``count`` initial states are complete; their records, in order."""
        while len(self.sections) <= count:
            await self.frame()
        return self.sections[:count]

    async def call(self, call_id: int, name: str, *params: Any) -> dict:
        await self.ws.send(_codec.encode({"callId": call_id, "action": name, "params": params}))
        while True:
            frame = await self.frame()
            if isinstance(frame, dict) and frame.get("callId") == call_id:
                return frame

    async def close(self) -> None:
        await self.ws.close()


def assert_anchor_first(section: list[dict], anchor_type: str, anchor_id: Any) -> None:
    assert section, "an empty initial state"
    first = section[0]
    assert (first["_instance_type"], first["id"]) == (anchor_type, anchor_id), (
        f"the initial state of {anchor_id} starts with {first['_instance_type']} {first['id']}"
    )


@pytest.mark.own_backend
@pytest.mark.parametrize("backend", BACKENDS)
async def test_every_initial_state_starts_with_its_anchor(transactional_db, shared_redis, backend):
    # Many records per anchor, so an order that does not put the anchor first (a hash
    # order) would show.
    shop = await db(make_shop)(items_per_order=40)
    alice = shop["alice"]
    orders = [order.pk for order in shop["orders"]]
    token = shop["tokens"]["alice"]
    with deployment(backend, shared_redis) as urls:
        # A single-instance channel.
        single = RawClient(f"{urls[0]}/ws/order/{orders[0]}/", token)
        await single.open()
        [section] = await single.until_sections(1)
        assert_anchor_first(section, ORDER, orders[0])
        await single.close()

        # A list channel: each anchor's records then its end marker.
        listing = RawClient(f"{urls[-1]}/ws/customer/{alice.pk}/orders/", token)
        await listing.open()
        for section, order in zip(await listing.until_sections(3), orders, strict=True):
            assert_anchor_first(section, ORDER, order)

        # An anchor added to the list (removed first, so it is added again).
        assert (await listing.call(1, "remove", orders[1]))["result"] is True
        assert (await listing.call(2, "add", orders[1]))["result"] is True
        assert_anchor_first((await listing.until_sections(4))[3], ORDER, orders[1])
        await listing.close()

        # A resync: the anchor's cache and history are gone when the client comes back.
        stale = RawClient(f"{urls[0]}/ws/order/{orders[2]}/", token)
        await stale.open()
        await stale.until_sections(1)
        await stale.close()
        await _forget_when_unwatched(orders[2])
        await stale.open(last_update=stale.last_update)
        [_, section] = await stale.until_sections(2)
        assert {"type": "resync", "anchorId": orders[2]} in stale.controls
        assert_anchor_first(section, ORDER, orders[2])
        await stale.close()


async def _forget_when_unwatched(order_pk: int) -> None:
    """Drop the anchor from the cache once no process watches it (its next load is cold,
    with no history to catch up from).

    Polls in short calls: a server on a thread of this process needs the same
    thread-sensitive executor to handle the client's disconnect.
    """
    from rxdjango._backends import get_backend

    ref = (OrderChannel.channel_id, order_pk)
    await until(lambda: get_backend().is_idle(ref), units=2)
    assert await db(OrderChannel.clear_cache)(order_pk), "the anchor was not cached"


# -- a refused write is followed by the record as it is -------------------------------------


async def test_a_refused_save_is_followed_by_the_current_record_before_the_reply(application, shop):
    order = shop["orders"][0]
    item = await db(lambda: order.items.order_by("id").first())()
    client = await connected(application, f"/ws/order/{order.pk}/", shop["tokens"]["alice"])
    write = {
        "type": "write",
        "writeId": 7,
        "operation": "save",
        "instanceType": ITEM,
        "instanceId": item.pk,
        "data": {"name": "refused"},
    }
    await client.send_frame(write)
    restoring = await client.receive_frame()
    assert restoring == [
        {
            "id": item.pk,
            "_instance_type": ITEM,
            "name": item.name,
            "price": str(item.price),
            "_tstamp": 0,
            "_operation": "update",
        }
    ]
    reply = await client.receive_frame()
    assert reply == {
        "type": "writeResponse",
        "writeId": 7,
        "success": False,
        "error": {"code": 403, "message": "not allowed"},
    }
    # WriteError from can_save: its message and status, after the record too.
    await client.send_frame({**write, "writeId": 8, "data": {"price": "-1.00"}})
    assert (await client.receive_frame())[0]["price"] == str(item.price)
    assert await client.receive_frame() == {
        "type": "writeResponse",
        "writeId": 8,
        "success": False,
        "error": {"code": 400, "message": "a price cannot be negative"},
    }
    # ForbiddenError from can_delete: the record comes back before the refusal.
    delete = {key: value for key, value in write.items() if key != "data"}
    await client.send_frame({**delete, "writeId": 9, "operation": "delete"})
    assert (await client.receive_frame())[0]["id"] == item.pk
    assert (await client.receive_frame())["error"] == {
        "code": 403,
        "message": "items are never deleted here",
    }
    assert client.state.tree() == await db(order_tree)(order.pk)
    # An id outside the writer's view gets the same refusal as ever, and nothing names it.
    other = await db(lambda: Item.objects.exclude(order=order).first())()
    await client.send_frame({**write, "writeId": 10, "instanceId": other.pk})
    reply = await client.receive_frame()
    assert reply["type"] == "writeResponse" and reply["error"]["code"] == 400
    assert await client.nothing_more()
    await client.disconnect()


# -- the original's documented calls, awaited and plain ------------------------------------


async def test_awaited_and_plain_calls(application, shop):
    order = shop["orders"][0]
    client = await connected(application, f"/ws/order/{order.pk}/", shop["tokens"]["alice"])
    # on_connect awaited set_runtime_var (and group_add: see the consumer test).
    assert {"type": "runtimeVar", "var": "viewers", "value": 1} in client.state.controls
    # An action returning self.runtime_state (a read-only mapping) is encoded.
    reply = await call(client, 1, "note", "hello")
    assert reply["result"] == {"viewers": 1, "note": "hello"}
    assert (await call(client, 2, "anchors"))["result"] == [order.pk]
    # Awaited clear_cache answers whether the anchor was cached.
    assert (await call(client, 3, "recache"))["result"] is True
    # Awaited broadcast_instance after an update() that sent no signal.
    item = await db(lambda: order.items.order_by("id").first())()
    reply = await call(client, 4, "reprice", item.pk, "99.00")
    assert "error" not in reply, reply
    expected = await db(order_tree)(order.pk)
    await read_until(client, lambda: client.state.tree() == expected)
    assert client.state.tree()["total_price"] == expected["total_price"]
    # Awaited broadcast_notification.
    await call(client, 5, "shout", "sale")
    notification = await client.receive_records()
    assert notification[0]["text"] == "sale"
    # Plain calls from synchronous code work as before, and can be awaited too.
    assert not await db(lambda: bool(OrderChannel.clear_cache(shop["orders"][1].pk)))()
    done = await db(lambda: OrderChannel.broadcast_notification(order.pk, {"text": "plain"}))()
    assert await done is None
    assert (await client.receive_records())[0]["text"] == "plain"
    await client.disconnect()


async def test_consumer_sends_text_data_and_bytes_data(application, shop):
    order = shop["orders"][0]
    client = await connected(application, f"/ws/order/{order.pk}/", shop["tokens"]["alice"])
    layer = _layers.get_layer("default")  # the in-process layer (no CHANNEL_LAYERS here)
    await layer.group_send(f"order-{order.pk}", {"type": "shop.announce", "text": "open"})
    assert await client.receive_frame() == {"type": "announcement", "text": "open"}
    await layer.group_send(f"order-{order.pk}", {"type": "shop.raw", "payload": b"\x00\x01"})
    message = await client.receive_output(timeout())
    assert message == {"type": "websocket.send", "bytes": b"\x00\x01"}
    await client.disconnect()


async def test_send_takes_exactly_one_payload(application, shop):
    order = shop["orders"][0]
    client = await connected(application, f"/ws/order/{order.pk}/", shop["tokens"]["alice"])
    channel = OrderChannel(None, shop["alice"], {"order_id": order.pk})  # type: ignore[arg-type]
    for kwargs in ({}, {"data": 1, "text_data": "x"}, {"text_data": b"x"}, {"bytes_data": "x"}):
        with pytest.raises(TypeError):
            await channel.send(**kwargs)
    await client.disconnect()


# -- the original's exception names, raised where they fit ---------------------------------


async def test_exception_names_refuse_sockets_and_calls(application, shop):
    order = shop["orders"][0]
    tokens = shop["tokens"]

    async def auth_status(path: str, token: str) -> int:
        client = ChannelCommunicator(application, path, token=token, channel=OrderChannel)
        return (await client.authenticate())["statusCode"]

    assert await auth_status(f"/ws/order/{order.pk}/", tokens["mallory"]) == 401
    assert await auth_status(f"/ws/order/{order.pk}/", tokens["bob"]) == 403
    assert await auth_status("/ws/order/999999/", tokens["alice"]) == 404
    client = await connected(application, f"/ws/order/{order.pk}/", tokens["alice"])
    reply = await call(client, 1, "close_order")
    assert reply["error"] == {"code": 403, "message": "only the shop may close an order"}
    await client.disconnect()


def test_exception_classes_are_the_originals_names():
    for name in (UnauthorizedError, ForbiddenError, AnchorDoesNotExist, WriteError, RxDjangoBug):
        assert issubclass(name, RxDjangoError)
    assert issubclass(UnknownProperty, ChannelDeclarationError)
    assert issubclass(ActionNotAsync, ChannelDeclarationError)
    assert (ForbiddenError().status, UnauthorizedError().status, AnchorDoesNotExist().status) == (
        403,
        401,
        404,
    )
    with pytest.raises(ActionNotAsync):

        class SyncAction(ContextChannel):
            class Meta:
                state = OrderSerializer()

            @action
            def not_async(self):  # type: ignore[misc]
                return None


def test_a_plain_property_followed_by_a_nested_serializer_is_an_unknown_property():
    class SiblingsSerializer(serializers.ModelSerializer):
        siblings = OrderSerializer(many=True, read_only=True)

        class Meta:
            model = Order
            fields = ["id", "siblings"]

    with pytest.raises(UnknownProperty, match=r"Order\.siblings is a plain property"):

        class SiblingsChannel(ContextChannel):
            class Meta:
                state = SiblingsSerializer()


# -- decorators.related_property ------------------------------------------------------------


def test_the_reverse_path_is_worked_out_from_the_accessor():
    assert reverse_path(Order, "items", "here") == "order"
    assert reverse_path(Item, "order", "here") == "items"
    assert reverse_path(Item, "order__customer", "here") == "order__items"
    with pytest.raises(ChannelDeclarationError, match="'nothing'"):
        reverse_path(Order, "nothing", "here")
    with pytest.raises(TypeError):
        related_property("")


async def test_a_value_computed_from_related_rows_follows_them(application, shop):
    order, other = shop["orders"][0], shop["orders"][1]
    client = await connected(application, f"/ws/order/{order.pk}/", shop["tokens"]["alice"])
    watcher = await connected(application, f"/ws/order/{other.pk}/", shop["tokens"]["alice"])

    async def holds_the_database() -> None:
        for who, pk in ((client, order.pk), (watcher, other.pk)):
            expected = await db(order_tree)(pk)

            def holds(who=who, expected=expected) -> bool:
                return who.state.tree() == expected

            holds.__doc__ = f"{step}: {who.state.tree()} != {expected}"
            await read_until(who, holds)

    def edit(step: str) -> None:
        items = list(order.items.order_by("id"))
        if step == "save":
            items[0].price = Decimal("10.00")
            items[0].save()
        elif step == "create":
            Item.objects.create(order=order, name="new", price=Decimal("5.25"))
        elif step == "delete":
            items[1].delete()
        elif step == "move":
            items[0].order = other
            items[0].save()

    for step in ("save", "create", "delete", "move"):
        await db(edit)(step)
        await holds_the_database()
    totals = await db(lambda: [Order.objects.get(pk=o.pk).total_price for o in (order, other)])()
    assert client.state.tree()["total_price"] == str(totals[0])
    assert watcher.state.tree()["total_price"] == str(totals[1])
    await client.disconnect()
    await watcher.disconnect()


async def read_until(client: ChannelCommunicator, holds: Any, units: float = 2.0) -> None:
    """Apply frames until ``holds()``; fails if it does not within ``units`` timeouts."""
    deadline = time.monotonic() + timeout(units)
    while not holds():
        assert time.monotonic() < deadline, f"the client never got there: {holds.__doc__}"
        if not await client.receive_nothing(0.05):  # a timeout would end the application
            await client.receive_frame()


async def test_serialize_instance_gives_the_flat_record(application, shop):
    order = shop["orders"][0]
    client = await connected(application, f"/ws/order/{order.pk}/", shop["tokens"]["alice"])
    channel = OrderChannel(None, shop["alice"], {"order_id": order.pk})  # type: ignore[arg-type]
    record = await channel.serialize_instance(order, 5.0)
    assert record == {**client.state.records[(ORDER, order.pk)], "_tstamp": 5.0} | {
        "_operation": "initial_state"
    }
    item = await db(lambda: order.items.first())()
    plain = await db(lambda: channel.serialize_instance(item).value)()
    assert plain["_instance_type"] == ITEM and plain["price"] == str(item.price)
    await client.disconnect()
