"""Mistakes in a channel declaration fail loudly at class creation."""

from __future__ import annotations

import sys
import textwrap

import pytest
from django.apps import AppConfig, apps
from django.test.utils import override_settings
from rest_framework import serializers

from rxdjango._registry import unregister as _unregister
from rxdjango.apps import discover_channels
from rxdjango.channels import ContextChannel
from rxdjango.exceptions import ChannelDeclarationError, RxDjangoError

from jobs.channels import JobChannel
from jobs.models import Job, Task
from jobs.serializers import JobSerializer, TaskSerializer


def test_meta_is_required():
    with pytest.raises(ChannelDeclarationError, match="must declare `class Meta"):

        class NoMeta(ContextChannel):
            pass


def test_state_must_be_an_instance():
    with pytest.raises(ChannelDeclarationError, match=r"state = JobSerializer\(\)"):

        class ClassNotInstance(ContextChannel):
            class Meta:
                state = JobSerializer


@pytest.mark.parametrize("state", [None, serializers.Serializer(), serializers.CharField()])
def test_state_must_be_a_model_serializer(state):
    meta = type("Meta", (), {"state": state})
    with pytest.raises(ChannelDeclarationError, match="ModelSerializer") as info:
        type("Wrong", (ContextChannel,), {"Meta": meta})
    assert isinstance(info.value, RxDjangoError) and info.value.code == "error/declaration"


def test_nested_source_must_follow_one_relation():
    class TaskViaJob(serializers.ModelSerializer):
        siblings = TaskSerializer(many=True, source="job.tasks")

        class Meta:
            model = Task
            fields = ["id", "siblings"]

    with pytest.raises(ChannelDeclarationError, match="related_property"):

        class Dotted(ContextChannel):
            class Meta:
                state = TaskViaJob()


def test_many_must_match_the_relation():
    class JobWithSingleTasks(serializers.ModelSerializer):
        tasks = TaskSerializer()

        class Meta:
            model = Job
            fields = ["id", "tasks"]

    with pytest.raises(ChannelDeclarationError, match="many=True"):

        class Mismatch(ContextChannel):
            class Meta:
                state = JobWithSingleTasks()


def test_user_key_must_name_a_field():
    class BadOwner(serializers.ModelSerializer):
        class Meta:
            model = Task
            fields = ["id"]
            user_key = "owner"

    with pytest.raises(ChannelDeclarationError, match="user_key"):

        class Private(ContextChannel):
            class Meta:
                state = BadOwner()


def test_has_permission_must_be_static():
    with pytest.raises(ChannelDeclarationError, match="staticmethod"):

        class NotStatic(ContextChannel):
            class Meta:
                state = JobSerializer()

            def has_permission(self, user, **kwargs):
                return True


def test_cache_ttl_must_be_positive():
    with pytest.raises(ChannelDeclarationError, match="cache_ttl"):

        class BadTtl(ContextChannel):
            class Meta:
                state = JobSerializer()
                cache_ttl = -5


def test_abstract_bases_are_not_registered_and_can_be_extended():
    class Base(ContextChannel):
        class Meta:
            abstract = True

    class Concrete(Base):
        class Meta:
            state = JobSerializer()
            cache_ttl = 60

    try:
        registered = ContextChannel.get_registered_channels()
        assert Concrete in registered and Base not in registered
        assert JobChannel in registered
        assert Concrete.get_cache_ttl() == 60
        assert JobChannel.get_cache_ttl() == 7 * 24 * 3600
        with override_settings(RX_CACHE_TTL=30):
            assert JobChannel.get_cache_ttl() == 30
        with pytest.raises(ChannelDeclarationError, match="abstract"):
            Base.as_asgi()
    finally:
        _unregister(Concrete)
    assert Concrete not in ContextChannel.get_registered_channels()


def test_import_error_inside_channels_module_surfaces(tmp_path, monkeypatch):
    package = tmp_path / "brokenapp"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "channels.py").write_text(
        textwrap.dedent(
            """
            import a_module_that_does_not_exist  # the real error
            """
        )
    )
    quiet = tmp_path / "quietapp"
    quiet.mkdir()
    (quiet / "__init__.py").write_text("")  # no channels.py: skipped silently
    monkeypatch.syspath_prepend(str(tmp_path))
    configs = [AppConfig.create("quietapp"), AppConfig.create("brokenapp")]
    monkeypatch.setattr(apps, "get_app_configs", lambda: configs)
    try:
        with pytest.raises(ModuleNotFoundError, match="a_module_that_does_not_exist"):
            discover_channels()
    finally:
        for name in ("brokenapp", "brokenapp.channels", "quietapp"):
            sys.modules.pop(name, None)


def test_system_checks_name_the_fix(monkeypatch):
    from rxdjango import apps as rx_apps
    from rxdjango.apps import check_settings

    assert check_settings() == []
    with override_settings(REDIS_URL="redis://127.0.0.1:6379/0"), monkeypatch.context() as patch:
        assert check_settings() == [], "the Redis backend is available"
        real_find_spec = rx_apps.find_spec
        patch.setattr(
            rx_apps, "find_spec", lambda name: None if name == "redis" else real_find_spec(name)
        )
        (missing,) = check_settings()
    assert missing.id == "rxdjango.E002" and "rxdjango[redis]" in missing.hint
    with override_settings(
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "rest_framework",
            "channels",
            "rxdjango",
            "jobs",
        ]
    ):
        (error,) = check_settings()
        assert error.id == "rxdjango.E001" and "rest_framework.authtoken" in error.hint
        with override_settings(RX_AUTHENTICATORS=["rxdjango.auth.session"]):
            assert check_settings() == []  # no tokens asked for: no token app needed
    with override_settings(RX_AUTHENTICATORS=["rxdjango.auth.nope", "rxdjango.auth", 42]):
        errors = check_settings()
    assert [e.id for e in errors] == ["rxdjango.E003"] * 3
    assert "'rxdjango.auth.nope'" in errors[0].msg


def test_a_channel_without_has_permission_is_reported_by_a_system_check():
    from rxdjango.apps import check_channels

    from jobs.channels import JobChannel, LabelChannel, ProjectJobsChannel

    found = {w.obj: w for w in check_channels() if w.id == "rxdjango.W002"}
    assert ProjectJobsChannel in found and LabelChannel in found
    assert JobChannel not in found
    assert "every authenticated user" in found[LabelChannel].msg
