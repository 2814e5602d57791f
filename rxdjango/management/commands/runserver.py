"""``runserver`` with ``--makefrontend``: regenerate the TypeScript at every (re)start.

Extends whichever ``runserver`` the project would otherwise get (Daphne's, then
staticfiles', then Django's), so installing RxDjango changes nothing unless the
flag is given. With the autoreloader, every reload after a Python change
regenerates the files (unchanged files are left alone).
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.core.management import call_command
from django.core.management.base import CommandError, CommandParser


def _base_command() -> type:
    if apps.is_installed("daphne"):
        from daphne.management.commands.runserver import Command as DaphneRunserver

        return DaphneRunserver
    if apps.is_installed("django.contrib.staticfiles"):
        from django.contrib.staticfiles.management.commands.runserver import (
            Command as StaticRunserver,
        )

        return StaticRunserver
    from django.core.management.commands.runserver import Command as DjangoRunserver

    return DjangoRunserver


class Command(_base_command()):  # type: ignore[misc]
    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--makefrontend",
            action="store_true",
            help="run makefrontend before serving, and again after every autoreload",
        )

    def inner_run(self, *args: Any, **options: Any) -> None:
        if options.get("makefrontend"):
            try:
                call_command("makefrontend", stdout=self.stdout, stderr=self.stderr)
            except CommandError as error:
                self.stderr.write(f"makefrontend: {error}")
        super().inner_run(*args, **options)
