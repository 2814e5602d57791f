"""The message kinds of the server and of the TypeScript client cannot drift apart.

``rxdjango/_protocol.py`` names every kind a browser sends or receives (and every
kind server processes exchange over Redis); ``client/src/protocol.ts`` keeps the
client's in one table. These tests read both and compare them, and check that no
other server module spells a kind as a string literal of its own.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from rxdjango import _protocol
from rxdjango._protocol import NOTIFICATION_TYPE, Operation, Reply, Request

ROOT = Path(__file__).resolve().parent.parent
CLIENT_PROTOCOL = ROOT / "client" / "src" / "protocol.ts"


def client_table(name: str) -> dict[str, str]:
    """``export const <name> = { KEY: 'value', ... } as const`` of protocol.ts."""
    source = CLIENT_PROTOCOL.read_text()
    found = re.search(rf"export const {name} = \{{(.*?)\}} as const;", source, re.S)
    assert found, f"protocol.ts has no table {name}"
    return dict(re.findall(r"(\w+): '([^']*)'", found.group(1)))


def client_constant(name: str) -> str:
    found = re.search(rf"export const {name} = '([^']*)';", CLIENT_PROTOCOL.read_text())
    assert found, f"protocol.ts has no constant {name}"
    return found.group(1)


def test_record_operations_match_the_client():
    assert client_table("Operation") == {member.name: member.value for member in Operation}


def test_message_types_match_the_client_in_both_directions():
    server = {member.name: member.value for member in (*Reply, *Request)}
    assert client_table("MessageType") == server


def test_the_notification_type_matches_the_client():
    assert client_constant("NOTIFICATION_TYPE") == NOTIFICATION_TYPE


def test_no_server_module_spells_a_kind_of_its_own():
    """A wire kind written as a literal outside ``_protocol.py`` is a kind the tables
    (and this pin) do not see. (Kinds that are also ordinary words of the code, like
    ``error`` or the Redis envelope kinds ``frame`` and ``epoch``, are left out.)"""
    kinds = {m.value for m in (*Reply, *Request)} | {NOTIFICATION_TYPE}
    kinds -= {"error", "action", "auth", "system", "maintenance"}
    protocol_file = Path(_protocol.__file__).resolve()
    offenders = []
    for path in sorted((ROOT / "rxdjango").rglob("*.py")):
        if path.resolve() == protocol_file:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in kinds:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert not offenders, "kinds spelled outside _protocol.py:\n" + "\n".join(offenders)
