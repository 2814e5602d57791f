"""The public surface is small and explicit; internals stay behind it."""

from __future__ import annotations

import importlib

import pytest

PUBLIC = {
    "rxdjango": ["__version__"],
    "rxdjango.actions": ["action"],
    "rxdjango.auth": ["Authenticator", "drf_token", "session"],
    "rxdjango.channels": ["ContextChannel", "broadcast_system_message"],
    "rxdjango.consumers": ["consumer"],
    "rxdjango.decorators": ["AccessorProperty", "depends_on", "related_property"],
    "rxdjango.exceptions": [
        "ActionError",
        "ActionNotAsync",
        "AnchorDoesNotExist",
        "ChannelDeclarationError",
        "ClientError",
        "ForbiddenError",
        "RxDjangoBug",
        "RxDjangoError",
        "UnauthorizedError",
        "UnknownProperty",
        "UnknownRuntimeVar",
        "WriteError",
    ],
    "rxdjango.health": ["health", "unready"],
    "rxdjango.metrics": ["metrics"],
    "rxdjango.operations": ["CREATE", "DELETE", "OPERATIONS", "SAVE"],
    "rxdjango.pytest_plugin": [
        "ActionFailed",
        "AuthRefused",
        "ClientFactory",
        "LiveServer",
        "RxClient",
        "WriteRefused",
    ],
    "rxdjango.relations": ["RelatedProperty", "related_property"],
    "rxdjango.testing": [
        "ChannelCommunicator",
        "ClientState",
        "ConnectionClosed",
        "between_load_layers",
        "reset_state",
        "timeout",
        "while_propagating",
        "while_sending_state",
    ],
}


@pytest.mark.parametrize("module_name", sorted(PUBLIC))
def test_public_names_are_pinned(module_name):
    module = importlib.import_module(module_name)
    assert sorted(module.__all__) == sorted(PUBLIC[module_name])
    for name in module.__all__:
        assert hasattr(module, name), f"{module_name}.{name} is exported but missing"


def test_operations_values_match_the_protocol():
    from rxdjango.operations import CREATE, DELETE, OPERATIONS, SAVE

    assert (SAVE, CREATE, DELETE) == ("save", "create", "delete")
    assert frozenset({"save", "create", "delete"}) == OPERATIONS
