"""Write the TypeScript interfaces and channel classes of every routed channel."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from rxdjango._frontend import generate
from rxdjango.conf import rx_settings


class Command(BaseCommand):
    help = (
        "Generate <app>.interfaces.ts and <app>.channels.ts for every app with routed "
        "channels, into RX_FRONTEND_DIR. Files whose content is unchanged are not rewritten."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="write nothing; list the files that would change and exit 1 if any would",
        )
        parser.add_argument(
            "--force", action="store_true", help="rewrite every file, even unchanged ones"
        )
        parser.add_argument(
            "--output", help="directory to write into (default: the RX_FRONTEND_DIR setting)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        directory = options["output"] or rx_settings.RX_FRONTEND_DIR
        if not directory:
            raise CommandError(
                "Set RX_FRONTEND_DIR to the directory of your frontend sources "
                "(e.g. BASE_DIR / 'frontend' / 'src' / 'rx'), or pass --output."
            )
        output = Path(directory)
        base_url = rx_settings.RX_WEBSOCKET_URL
        if not isinstance(base_url, str):
            raise CommandError("RX_WEBSOCKET_URL must be a string")
        files, warnings = generate(output, base_url)
        for warning in warnings:
            self.stderr.write(f"warning: {warning}")
        changed = [
            f
            for f in files
            if options["force"] or not f.path.exists() or f.path.read_text() != f.content
        ]
        if options["dry_run"]:
            for f in changed:
                self.stdout.write(f"would write {f.path}")
            if changed:
                sys.exit(1)
            self.stdout.write("up to date")
            return
        output.mkdir(parents=True, exist_ok=True)
        for f in changed:
            f.path.write_text(f.content)
            self.stdout.write(f"wrote {f.path}")
        if not changed:
            self.stdout.write("up to date")
