"""makefrontend: TypeScript types for DRF fields and type hints, routes, stable output."""

from __future__ import annotations

import datetime
import decimal
import os
import socket
import subprocess
import sys
import time
import uuid
from io import StringIO
from types import SimpleNamespace
from typing import Any, Literal, TypedDict

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test.utils import override_settings
from rest_framework import serializers

from rxdjango._frontend import _type_names, find_routes
from rxdjango._ts_types import TypeContext, field_type, hint_type
from rxdjango.testing import timeout

from jobs.channels import JobChannel, LabelChannel, ProjectJobsChannel
from jobs.models import Task
from support import TESTS_DIR


class Point(TypedDict, total=False):
    x: int
    label: str


class SinkSerializer(serializers.ModelSerializer):
    flag = serializers.BooleanField()
    count = serializers.IntegerField()
    big = serializers.BigIntegerField(coerce_to_string=True)
    ratio = serializers.FloatField(allow_null=True)
    price = serializers.DecimalField(max_digits=6, decimal_places=2)
    price_number = serializers.DecimalField(max_digits=6, decimal_places=2, coerce_to_string=False)
    when = serializers.DateTimeField()
    day = serializers.DateField()
    token = serializers.UUIDField()
    blob = serializers.JSONField()
    mapping = serializers.DictField(child=serializers.IntegerField())
    items = serializers.ListField(child=serializers.CharField())
    color = serializers.ChoiceField(choices=[("r", "Red"), ("g", "Green")])
    level = serializers.ChoiceField(choices=[1, 2, 3])
    colors = serializers.MultipleChoiceField(choices=["r", "g"])
    job = serializers.PrimaryKeyRelatedField(read_only=True)
    label_ids = serializers.PrimaryKeyRelatedField(many=True, read_only=True, source="labels")
    slug = serializers.SlugRelatedField(slug_field="title", read_only=True, source="job")
    typed = serializers.SerializerMethodField()
    untyped = serializers.SerializerMethodField()
    done_copy = serializers.ReadOnlyField(source="done")

    class Meta:
        model = Task
        fields = "__all__"

    def get_typed(self, task: Task) -> list[Point] | None:
        return None

    def get_untyped(self, task):
        return None


def test_every_drf_field_has_a_known_type():
    context = TypeContext()
    fields = SinkSerializer().fields
    types = {name: field_type(fields[name], context, name) for name in fields}
    assert types["flag"] == "boolean"
    assert types["count"] == "number"
    assert types["big"] == "string", "DRF sends coerced big integers as strings"
    assert types["ratio"] == "number | null"
    assert types["price"] == "string", "DRF sends decimals as strings by default"
    assert types["price_number"] == "number"
    assert types["when"] == types["day"] == types["token"] == "string"
    assert types["blob"] == "JSONValue"
    assert types["mapping"] == "Record<string, number>"
    assert types["items"] == "string[]"
    assert types["color"] == '"r" | "g"'
    assert types["level"] == "1 | 2 | 3"
    assert types["colors"] == '("r" | "g")[]'
    assert types["job"] == "number"
    assert types["label_ids"] == "number[]"
    assert types["slug"] == "string"
    assert types["typed"] == "Point[] | null"
    assert types["done_copy"] == "boolean"
    assert types["untyped"] == "unknown", "never a silent any"
    assert any("get_untyped" in where for where in context.unknown)
    assert context.named["Point"] == "{\n  x?: number;\n  label?: string;\n}"


@pytest.mark.parametrize(
    ("hint", "expected"),
    [
        (int | None, "number | null"),
        (int | str, "number | string"),
        (list[int], "number[]"),
        (list[int | None], "(number | null)[]"),
        (dict[str, bool], "Record<string, boolean>"),
        (tuple[int, str], "[number, string]"),
        (tuple[int, ...], "number[]"),
        (Literal["a", 2, True], '"a" | 2 | true'),
        (datetime.datetime, "string"),
        (datetime.date, "string"),
        (decimal.Decimal, "string"),
        (uuid.UUID, "string"),
        (None, "null"),
        (Point, "Point"),
    ],
)
def test_python_hints_become_typescript(hint, expected):
    assert hint_type(hint, TypeContext(), "x") == expected


def test_two_typed_dicts_with_one_name_stay_distinct():
    class Point2(TypedDict):
        y: float

    other: Any = Point2
    other.__name__ = "Point"
    other.__module__ = "geo.shapes"
    context = TypeContext()
    assert hint_type(Point, context, "a") == "Point"
    assert hint_type(other, context, "b") == "GeoShapesPoint"
    assert hint_type(Point, context, "c") == "Point"
    assert context.named["GeoShapesPoint"] == "{\n  y: number;\n}"


def test_any_is_reported_not_hidden():
    context = TypeContext()
    assert hint_type(Any, context, "JobChannel.act(value)") == "unknown"
    assert context.unknown == ["JobChannel.act(value)"]


def test_routes_come_from_the_asgi_application():
    routes = find_routes()
    assert routes[JobChannel].template == "ws/job/{job_id}/"
    assert routes[JobChannel].params == (("job_id", "number"),)
    assert routes[ProjectJobsChannel].template == "ws/project/{project_id}/jobs/"
    assert LabelChannel in routes


def test_two_serializers_with_one_name_get_distinct_type_names():
    def layer(module: str, name: str) -> Any:
        serializer_class = type(name, (), {"__module__": module})
        return SimpleNamespace(
            serializer_class=serializer_class, instance_type=f"{module}.{name}", type_name=name
        )

    layers = [layer("shop.serializers", "ItemSerializer"), layer("blog.api", "ItemSerializer")]
    names = _type_names(layers)
    assert len(set(names.values())) == 2
    assert names["shop.serializers.ItemSerializer"] == "ShopSerializersItemType"
    assert _type_names(layers[:1]) == {"shop.serializers.ItemSerializer": "ItemType"}


def _run(*args: str) -> str:
    out = StringIO()
    call_command("makefrontend", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_output_is_stable_and_dry_run_tells_ci(tmp_path):
    with override_settings(RX_FRONTEND_DIR=str(tmp_path)):
        first = _run()
        assert "jobs.interfaces.ts" in first and "jobs.channels.ts" in first
        channels = tmp_path / "jobs.channels.ts"
        written = {p.name: p.read_text() for p in tmp_path.iterdir()}
        stamp = channels.stat().st_mtime_ns
        assert _run().strip() == "up to date"
        assert channels.stat().st_mtime_ns == stamp, "unchanged files are not rewritten"
        assert _run("--dry-run").strip() == "up to date"
        channels.write_text(written["jobs.channels.ts"] + "// edited\n")
        with pytest.raises(SystemExit) as exited:
            _run("--dry-run")
        assert exited.value.code == 1
        assert channels.read_text().endswith("// edited\n"), "a dry run writes nothing"
        assert "jobs.channels.ts" in _run("--force")
        assert {p.name: p.read_text() for p in tmp_path.iterdir()} == written


def test_frontend_dir_is_required(tmp_path):
    with (
        override_settings(RX_FRONTEND_DIR=None),
        pytest.raises(CommandError, match="RX_FRONTEND_DIR"),
    ):
        _run()


def test_generated_channel_describes_the_state(tmp_path):
    _run("--output", str(tmp_path))
    source = (tmp_path / "jobs.channels.ts").read_text()
    assert (
        "export class JobChannel extends ContextChannel<JobType, JobChannelRuntimeState>" in source
    )
    assert 'static readonly endpoint = "ws/job/{job_id}/";' in source
    assert (
        "constructor(jobId: number, token: string | null = null, options?: ChannelOptions)"
        in source
    )
    assert "countTasks(filters?: TaskFilter | null): Promise<number>" in source
    assert "schedule(taskId: number, due: string, tags?: string[] | null)" in source
    assert "static readonly many = true;" in source  # ProjectJobsChannel
    interfaces = (tmp_path / "jobs.interfaces.ts").read_text()
    assert "readonly title_length: number;" in interfaces
    assert "budget: string;" in interfaces, "Decimal travels as a string"
    assert "export interface TaskWrite {" in interfaces


def test_runserver_makefrontend_writes_the_files(tmp_path):
    port = _free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "testproject.settings",
        "RX_TEST_FRONTEND_DIR": str(tmp_path),
        "RX_TEST_DB": "sqlite",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "django", "runserver", "--makefrontend", "--noreload", str(port)],
        cwd=TESTS_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + timeout(4)
        target = tmp_path / "jobs.channels.ts"
        while not (target.exists() and target.read_text().rstrip().endswith("}")):
            assert server.poll() is None, "runserver exited"
            assert time.monotonic() < deadline, "runserver --makefrontend wrote nothing"
            time.sleep(0.05)
        assert "export class JobChannel" in target.read_text()
    finally:
        server.terminate()
        server.wait(timeout(1))


def _free_port() -> int:
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port
