"""Airflow discovers the provider, its hook and the ``ctxcache`` connection form."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from airflow.models.connection import Connection
from airflow.providers_manager import ProvidersManager
from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime


def test_providers_manager_sees_the_distribution() -> None:
    provider = ProvidersManager().providers["airflow-provider-ctxcache"]
    assert provider.data["package-name"] == "airflow-provider-ctxcache"


def test_connection_type_maps_to_the_hook() -> None:
    hook = ProvidersManagerTaskRuntime().hooks["ctxcache"]
    assert hook is not None
    assert hook.hook_class_name == "airflow_provider_ctxcache.hooks.ContextCacheHook"
    assert hook.hook_name == "Gemini Context Cache"
    assert hook.connection_id_attribute_name == "ctxcache_conn_id"


def test_connection_form_has_the_fields_and_marks_the_secret() -> None:
    widgets = ProvidersManager().connection_form_widgets
    fields = {k.removeprefix("extra__ctxcache__") for k in widgets if k.startswith("extra__ctxcache__")}
    assert {"backend", "project", "location", "base_url", "api_version", "service_account_json"} <= fields
    assert widgets["extra__ctxcache__service_account_json"].is_sensitive
    assert not widgets["extra__ctxcache__project"].is_sensitive


def test_connection_form_offers_the_quota_extras_with_the_parsers_defaults() -> None:
    from airflow_provider_ctxcache.hooks.settings import ConnectionSettings

    widgets = ProvidersManager().connection_form_widgets
    parsed = ConnectionSettings(conn_id="defaults", backend="gemini_api")
    for name in ("rpm_limit", "tpm_limit", "quota_window_seconds", "tpm_counts_cached"):
        field = widgets[f"extra__ctxcache__{name}"].field
        assert field["description"], name
        assert field["value"] == getattr(parsed, name), name
    assert widgets["extra__ctxcache__tpm_counts_cached"].field["schema"]["type"] == ["boolean", "null"]
    assert widgets["extra__ctxcache__rpm_limit"].field["schema"]["minimum"] == 1
    for name, attribute in (("retry_attempts", "retry_attempts"), ("timeout", "timeout_seconds")):
        assert widgets[f"extra__ctxcache__{name}"].field["value"] == getattr(parsed, attribute)


def test_every_extra_the_connection_parser_reads_is_on_the_form() -> None:
    import airflow_provider_ctxcache.hooks.settings as settings

    widgets = ProvidersManager().connection_form_widgets
    on_form = {k.removeprefix("extra__ctxcache__") for k in widgets if k.startswith("extra__ctxcache__")}
    assert parsed_extras(Path(settings.__file__)) <= on_form


def test_every_form_default_is_the_parsers_default() -> None:
    from airflow_provider_ctxcache.hooks.settings import ConnectionSettings

    widgets = ProvidersManager().connection_form_widgets
    developer = Connection(conn_id="defaults", conn_type="ctxcache", password="any")
    vertex = Connection(
        conn_id="defaults", conn_type="ctxcache", extra='{"backend": "vertex_ai", "project": "p"}'
    )
    parsed = ConnectionSettings.from_connection(developer)
    renamed = {"timeout": "timeout_seconds"}
    checked = set()
    for key, widget in widgets.items():
        name = key.removeprefix("extra__ctxcache__")
        if key.startswith("extra__ctxcache__") and widget.field.get("value") is not None:
            source = ConnectionSettings.from_connection(vertex) if name == "location" else parsed
            assert widget.field["value"] == getattr(source, renamed.get(name, name)), name
            checked.add(name)
    assert {"retry_initial_delay", "retry_max_delay", "location", "backend"} <= checked


def parsed_extras(settings_file: Path) -> set[str]:
    """The extra names the parser reads: string literals passed as the key to its readers."""
    readers = {"_extra", "_number", "_json_object", "_optional_int", "_positive_float", "_flag"}
    found: set[str] = set()
    for node in ast.walk(ast.parse(settings_file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in readers:
            key = node.args[1] if len(node.args) > 1 else None
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                found.add(key.value)
    return found


def test_connection_form_hides_unused_fields_and_relabels_the_key() -> None:
    behaviour = ProvidersManager().field_behaviours["ctxcache"]
    assert {"host", "schema", "login", "port"} <= set(behaviour["hidden_fields"])
    assert "API key" in behaviour["relabeling"]["password"]


def test_airflow_cli_lists_the_provider(tmp_path: Path) -> None:
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path)}
    airflow = Path(sys.executable).with_name("airflow")
    listed = subprocess.run(
        [str(airflow), "providers", "list"], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    assert "airflow-provider-ctxcache" in listed.stdout
