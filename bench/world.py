"""Create the benchmark's data and print it as JSON (run by ``run.py`` in a subprocess).

A subprocess, because each mode needs Django set up with its own settings: SQLite for
the single-process runs, a fresh PostgreSQL database for the multi-process runs.
"""

from __future__ import annotations

import json
import os
import sys

import django


def fresh_postgres_database(name: str) -> None:
    """Drop and create ``name``, so every multi-process run starts from the same data."""
    import psycopg

    with psycopg.connect(
        host=os.environ.get("PGHOST", "127.0.0.1"),
        port=os.environ.get("PGPORT", "5432"),
        user=os.environ.get("PGUSER", "postgres"),
        dbname="postgres",
        autocommit=True,
    ) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')


def create(big_tasks: int, bulk_tasks: int, fanin_jobs: int) -> dict:
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from rest_framework.authtoken.models import Token

    from jobs.models import Job, Participant, Project, Task

    call_command("migrate", verbosity=0)
    User = get_user_model()
    staff = User.objects.create_user("bench", is_staff=True)
    project = Project.objects.create(name="Bench")
    developers = [
        Participant.objects.create(project=project, user=User.objects.create_user(f"dev{i}"))
        for i in range(10)
    ]
    small = Job.objects.create(project=project, title="small")
    tasks = Task.objects.bulk_create(Task(job=small, title=f"task {i}") for i in range(10))
    big_jobs = []
    for index in range(3):
        big = Job.objects.create(project=project, title=f"big {index}")
        Task.objects.bulk_create(
            Task(job=big, title=f"task {i} " + "x" * 40, developer=developers[i % 10])
            for i in range(big_tasks)
        )
        big_jobs.append(big.pk)
    # One anchor whose every task a QuerySet.update() changes at once.
    bulk = Job.objects.create(project=project, title="bulk")
    Task.objects.bulk_create(Task(job=bulk, title=f"task {i}") for i in range(bulk_tasks))
    # One developer shown in ten tasks of each of many jobs (the fan-in of a rename).
    fanin_user = User.objects.create_user("fan-in")
    fanin = Participant.objects.create(project=project, user=fanin_user)
    fanin_pks = []
    for index in range(fanin_jobs):
        job = Job.objects.create(project=project, title=f"fan-in {index}")
        Task.objects.bulk_create(
            Task(job=job, title=f"task {i}", developer=fanin) for i in range(10)
        )
        fanin_pks.append(job.pk)
    return {
        "token": Token.objects.create(user=staff).key,
        "fanin_user": fanin_user.pk,
        "fanin_jobs": fanin_pks,
        "small_job": small.pk,
        "small_task": tasks[0].pk,
        "big_jobs": big_jobs,
        "big_tasks": big_tasks,
        "bulk_job": bulk.pk,
        "bulk_tasks": bulk_tasks,
    }


def main() -> None:
    big_tasks, bulk_tasks, fanin_jobs = (int(arg) for arg in sys.argv[1:4])
    if os.environ.get("BENCH_MODE") == "multi":
        fresh_postgres_database(os.environ["PGDATABASE"])
    django.setup()
    print(json.dumps(create(big_tasks, bulk_tasks, fanin_jobs)))


if __name__ == "__main__":
    main()
