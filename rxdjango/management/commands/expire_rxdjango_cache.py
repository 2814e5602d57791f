"""Expire the cached anchors that have been idle longer than their TTL, now."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from rxdjango._backends import get_backend
from rxdjango._capture import capturing
from rxdjango._relay import enforce_retention


class Command(BaseCommand):
    help = (
        "Drop cached anchors nobody has watched for longer than their channel's cache TTL "
        "(Meta.cache_ttl or RX_CACHE_TTL), and apply RX_CAPTURE_RETENTION to the change "
        "log. Server processes do this by themselves; the command is for inspection "
        "(--dry-run) and for deployments with no server process running."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="only list the anchors that would expire; change nothing",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        backend = get_backend()
        if not backend.spans_processes:
            raise CommandError(
                "The embedded backend keeps its cache inside the server process, which "
                "expires idle anchors by itself; this command only works with REDIS_URL set."
            )
        dry_run = bool(options["dry_run"])
        expired = backend.expire(dry_run=dry_run)
        verb = "would expire" if dry_run else "expired"
        for channel_id, anchor in expired:
            self.stdout.write(f"{verb} {channel_id} {anchor}")
        self.stdout.write(f"{len(expired)} anchor(s) {verb}")
        if dry_run:
            return
        for using in connections:
            if capturing(using):
                dropped = enforce_retention(using)
                self.stdout.write(f"{dropped} captured change(s) past retention dropped ({using})")
