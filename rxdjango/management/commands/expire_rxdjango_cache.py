"""Expire the cached anchors that have been idle longer than their TTL, now."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from rxdjango._backend import get_backend


class Command(BaseCommand):
    help = (
        "Drop cached anchors nobody has watched for longer than their channel's cache TTL "
        "(Meta.cache_ttl or RX_CACHE_TTL). Server processes do this by themselves; the "
        "command is for inspection (--dry-run) and for deployments with no process running."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="only list the anchors that would expire; change nothing",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        backend = get_backend()
        expire = getattr(backend, "expire", None)
        if not backend.spans_processes or expire is None:
            raise CommandError(
                "The embedded backend keeps its cache inside the server process, which "
                "expires idle anchors by itself; this command only works with REDIS_URL set."
            )
        dry_run = bool(options["dry_run"])
        expired = expire(dry_run=dry_run)
        verb = "would expire" if dry_run else "expired"
        for channel_id, anchor in expired:
            self.stdout.write(f"{verb} {channel_id} {anchor}")
        self.stdout.write(f"{len(expired)} anchor(s) {verb}")
