"""Create the demo users and boards once, then print how to log in."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from rest_framework.authtoken.models import Token

from board.models import Board, Card, Column, Comment, Note

USERS = ("alice", "bob", "carol")
PASSWORD = "demo"


class Command(BaseCommand):
    help = "Seed the demo users (password 'demo') and boards; idempotent."

    def add_arguments(self, parser):
        parser.add_argument("--url", default="http://127.0.0.1:8000/")

    @transaction.atomic
    def handle(self, *args, **options):
        User = get_user_model()
        users = {}
        for name in USERS:
            user, created = User.objects.get_or_create(username=name)
            if created:
                user.set_password(PASSWORD)
                user.is_staff = user.is_superuser = name == "alice"
                user.save()
            Token.objects.get_or_create(user=user)
            users[name] = user
        if not Board.objects.exists():
            launch = Board.objects.create(name="Launch", owner=users["alice"])
            launch.members.add(users["alice"], users["bob"])
            todo, doing, done = (
                Column.objects.create(board=launch, title=title, position=i)
                for i, title in enumerate(("To do", "Doing", "Done"))
            )
            card = Card.objects.create(column=todo, title="Write the press release", position=0)
            Card.objects.create(column=todo, title="Book the venue", position=1)
            Card.objects.create(column=doing, title="Fix the demo", assignee=users["bob"])
            Card.objects.create(column=done, title="Pick a date", position=0)
            Comment.objects.create(card=card, author=users["bob"], text="Draft is in the drive")
            Note.objects.create(board=launch, owner=users["alice"], text="Alice's private note")
            Note.objects.create(board=launch, owner=users["bob"], text="Bob's private note")
            personal = Board.objects.create(name="Alice's errands", owner=users["alice"])
            personal.members.add(users["alice"])
            Column.objects.create(board=personal, title="Soon", position=0)
        self.stdout.write(
            f"Open {options['url']} and log in as alice, bob or carol (password '{PASSWORD}')."
        )
