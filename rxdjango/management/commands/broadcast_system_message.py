"""Send a system (or maintenance) message to every connected client."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from rxdjango._backends import get_backend
from rxdjango._layers import cross_process_layer
from rxdjango.channels import broadcast_system_message


class Command(BaseCommand):
    help = (
        "Send a `system` message (or, with --maintenance, a `maintenance` message) to every client."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("message", help="the text of the message")
        parser.add_argument(
            "--maintenance",
            action="store_true",
            help="send a maintenance message: clients expect a restart and reconnect",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not get_backend().spans_processes and cross_process_layer() is None:
            raise CommandError(
                "The embedded backend delivers only to clients of the process that sends; "
                "this command runs in its own process and would reach nobody. Configure "
                "CHANNEL_LAYERS with a layer that spans processes (channels_redis), or call "
                "rxdjango.channels.broadcast_system_message() from the server process."
            )
        broadcast_system_message(options["message"], maintenance=options["maintenance"])
        self.stdout.write("sent")
