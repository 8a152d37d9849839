"""The provider's model table and the size pre-check it drives.

The pre-check (CreateCacheOperator counting tokens before it creates) only saves a round trip,
so it must never refuse what the service takes: these tests run it through the real operator,
the real SDK and the emulator for every row of the table, on each backend the row serves.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_ctxcache.contents import fingerprint
from airflow_provider_ctxcache.costs import find_price
from airflow_provider_ctxcache.emulator.model_facts import MODEL_FACTS as EMULATOR_FACTS
from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.emulator.tokens import text_of_tokens
from airflow_provider_ctxcache.exceptions import CacheTooSmallError, CtxCacheConfigError, ModelNotFoundError
from airflow_provider_ctxcache.hooks import ContextCacheHook
from airflow_provider_ctxcache.model_facts import (
    MODEL_FACTS,
    THINKING_DEFAULTS,
    _facts_by_name,
    check_not_shut_down,
    facts_for,
    lookup_keys,
    model_id,
    precheck_min_tokens,
    similar_models,
)
from airflow_provider_ctxcache.operators import CreateCacheOperator
from tests.hooks.conftest import ConnFactory, backend_extra, make_conn  # noqa: F401  (shared fixture)
from tests.operators.context import task_context

TODAY = dt.date(2026, 11, 29)
SERVED = sorted(
    (model, backend) for model, facts in MODEL_FACTS.items() for backend in facts.min_cache_tokens
)
# Rows a cache can be made for today: shut-down models are refused before any call (tested below).
LIVE = [(model, backend) for model, backend in SERVED if not MODEL_FACTS[model].shut_down]
UNKNOWN_MODEL = "gemini-9-experimental"


def counts(emulator: EmulatorProcess) -> dict[str, int]:
    return dict(emulator.admin.state()["counts"])


def create(conn_id: str, model: str, tokens: int, **kwargs: Any) -> str:
    op = CreateCacheOperator(
        task_id="create_cache",
        ctxcache_conn_id=conn_id,
        model=model,
        contents=[text_of_tokens(tokens)],
        reuse="never",
        **kwargs,
    )
    return op.execute(task_context())


def conn_for(make_conn: ConnFactory, emulator: EmulatorProcess, backend: str) -> str:  # noqa: F811
    return make_conn(f"models_{backend}", **backend_extra(backend, emulator))


# -- one model-id normalisation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "form",
    [
        "gemini-2.5-flash",
        " models/gemini-2.5-flash ",
        "publishers/google/models/gemini-2.5-flash",
        "projects/p/locations/us-central1/publishers/google/models/gemini-2.5-flash",
        "Gemini-2.5-Flash",
    ],
)
def test_every_form_of_a_model_name_is_one_id(form: str) -> None:
    assert model_id(form) == "gemini-2.5-flash"


def test_a_version_suffix_falls_back_to_its_family() -> None:
    assert lookup_keys("models/gemini-2.5-pro-002") == ["gemini-2.5-pro-002", "gemini-2.5-pro"]
    assert lookup_keys("gemini-2.0-flash-001") == ["gemini-2.0-flash-001", "gemini-2.0-flash"]
    assert facts_for("gemini-2.0-flash-001") is MODEL_FACTS["gemini-2.0-flash-001"]
    assert facts_for("gemini-2.5-pro-002") is MODEL_FACTS["gemini-2.5-pro"]


def test_prices_and_fingerprints_use_the_same_normalisation() -> None:
    full = "projects/p/locations/l/publishers/google/models/gemini-2.5-flash"
    assert find_price(full) == find_price("gemini-2.5-flash") == find_price("models/Gemini-2.5-Flash")
    prints = {
        fingerprint(model=form, contents=[]) for form in ("gemini-2.5-flash", "models/gemini-2.5-flash", full)
    }
    assert len(prints) == 1


# -- the table ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", sorted(MODEL_FACTS))
def test_every_row_is_complete_and_consistent(model: str) -> None:
    facts = MODEL_FACTS[model]
    assert facts.min_cache_tokens, "a row serves at least one backend"
    assert set(facts.min_cache_tokens) <= {"gemini_api", "vertex_ai"}
    assert set(facts.lower_min_tokens) <= set(facts.min_cache_tokens)
    assert facts.thinking_default in THINKING_DEFAULTS
    if facts.shut_down is not None:
        dt.date.fromisoformat(facts.shut_down)
        assert facts.replaced_by in MODEL_FACTS
    if facts.thinking_default == "none":
        assert facts.thinking_can_be_off


@pytest.mark.parametrize(("model", "backend"), SERVED)
def test_the_precheck_minimum_is_the_lowest_credible_value(model: str, backend: str) -> None:
    facts = MODEL_FACTS[model]
    documented = facts.min_cache_tokens[backend]
    minimum = precheck_min_tokens(model, backend)
    assert minimum == min(documented, facts.lower_min_tokens.get(backend, documented))
    assert minimum is not None
    assert minimum <= documented


def test_where_sources_disagree_the_lower_value_is_used() -> None:
    # Vertex docs say 4,096 for 3.x; a server was seen enforcing 1,024 on 3.1 Pro preview.
    assert MODEL_FACTS["gemini-3.1-pro-preview"].min_cache_tokens["vertex_ai"] == 4096
    assert precheck_min_tokens("gemini-3.1-pro-preview", "vertex_ai") == 1024
    assert precheck_min_tokens("gemini-3.1-pro-preview", "gemini_api") == 4096


def test_unknown_models_and_backends_a_model_is_not_on_have_no_minimum() -> None:
    assert precheck_min_tokens(UNKNOWN_MODEL, "gemini_api") is None
    assert precheck_min_tokens("gemini-1.5-pro-002", "gemini_api") is None
    assert precheck_min_tokens("gemini-1.5-pro-002", "vertex_ai") == 32769


def test_facts_from_the_changelog() -> None:
    assert MODEL_FACTS["gemini-2.5-pro"].min_cache_tokens == {"gemini_api": 2048, "vertex_ai": 2048}
    assert MODEL_FACTS["gemini-3.5-flash"].min_cache_tokens == {"gemini_api": 4096, "vertex_ai": 4096}
    assert (
        MODEL_FACTS["gemini-2.5-flash"].thinking_default,
        MODEL_FACTS["gemini-2.5-flash"].thinking_can_be_off,
    ) == (
        "dynamic",
        True,
    )
    assert MODEL_FACTS["gemini-2.5-flash-lite"].thinking_default == "off"
    assert not MODEL_FACTS["gemini-2.5-pro"].thinking_can_be_off
    assert not MODEL_FACTS["gemini-3.1-pro-preview"].thinking_can_be_off
    assert MODEL_FACTS["gemini-3.5-flash"].thinking_default == "high"
    assert MODEL_FACTS["gemini-2.0-flash"].thinking_default == "none"
    gone = MODEL_FACTS["gemini-3-pro-preview"]
    assert (gone.shut_down, gone.replaced_by) == ("2026-03-09", "gemini-3.1-pro-preview")


def test_the_tables_agree() -> None:
    """The provider's table and the emulator's describe the same models the same way."""
    assert set(MODEL_FACTS) == set(EMULATOR_FACTS)
    disagreements = []
    for model, ours in sorted(MODEL_FACTS.items()):
        theirs = EMULATOR_FACTS[model]
        for fact in ("caching", "shut_down", "thinking_default", "thinking_can_be_off"):
            if getattr(ours, fact) != getattr(theirs, fact):
                disagreements.append(f"{model}.{fact}: {getattr(ours, fact)!r} != {getattr(theirs, fact)!r}")
        if set(ours.min_cache_tokens) != set(theirs.min_cache_tokens):
            disagreements.append(
                f"{model}: served on {sorted(ours.min_cache_tokens)} != {sorted(theirs.min_cache_tokens)}"
            )
        for backend in set(ours.min_cache_tokens) & set(theirs.min_cache_tokens):
            ours_min, theirs_min = ours.precheck_minimum(backend), theirs.min_cache_tokens[backend]
            if ours_min is not None and ours_min > theirs_min:
                disagreements.append(f"{model} on {backend}: pre-check {ours_min} > emulator {theirs_min}")
    assert not disagreements, "\n".join(disagreements)


# -- the pre-check, through the operator, the SDK and the emulator -----------------------------------


@pytest.mark.parametrize(("model", "backend"), LIVE)
def test_the_precheck_accepts_the_documented_minimum(
    model: str,
    backend: str,
    emulator: EmulatorProcess,
    make_conn: ConnFactory,  # noqa: F811
) -> None:
    documented = MODEL_FACTS[model].min_cache_tokens[backend]
    name = create(conn_for(make_conn, emulator, backend), model, documented)
    assert name
    assert counts(emulator)["create_cache"] == 1


@pytest.mark.parametrize(("model", "backend"), LIVE)
def test_the_precheck_refuses_only_below_its_minimum_and_sends_no_create(
    model: str,
    backend: str,
    emulator: EmulatorProcess,
    make_conn: ConnFactory,  # noqa: F811
) -> None:
    minimum = precheck_min_tokens(model, backend)
    assert minimum is not None
    with pytest.raises(CacheTooSmallError) as raised:
        create(conn_for(make_conn, emulator, backend), model, minimum - 1)
    assert (raised.value.token_count, raised.value.minimum) == (minimum - 1, minimum)
    assert counts(emulator).get("create_cache", 0) == 0


@pytest.mark.parametrize(
    ("model", "backend"),
    [(m, b) for m, b in LIVE if precheck_min_tokens(m, b) != MODEL_FACTS[m].min_cache_tokens[b]],
)
def test_where_sources_disagree_the_server_decides_and_its_answer_is_mapped(
    model: str,
    backend: str,
    emulator: EmulatorProcess,
    make_conn: ConnFactory,  # noqa: F811
) -> None:
    minimum = precheck_min_tokens(model, backend)
    server_minimum = EMULATOR_FACTS[model].min_cache_tokens[backend]
    assert minimum is not None
    if minimum >= server_minimum:
        pytest.skip("the emulator takes the lower value too")
    with pytest.raises(CacheTooSmallError) as raised:
        create(conn_for(make_conn, emulator, backend), model, minimum)
    assert (raised.value.token_count, raised.value.minimum) == (minimum, server_minimum)
    assert counts(emulator)["create_cache"] == 1  # the server was asked


@pytest.fixture(scope="module")
def emulator_with_new_model() -> Iterator[EmulatorProcess]:
    """An emulator that serves a model the provider's table has never heard of, minimum 5."""
    with EmulatorProcess(args=["--min-tokens", f"{UNKNOWN_MODEL}=5"]) as process:
        yield process


@pytest.mark.parametrize("backend", ["gemini_api", "vertex_ai"])
def test_an_unknown_model_is_not_prechecked_and_the_server_decides(
    backend: str,
    emulator_with_new_model: EmulatorProcess,
    make_conn: ConnFactory,  # noqa: F811
) -> None:
    emulator_with_new_model.admin.reset()
    conn_id = conn_for(make_conn, emulator_with_new_model, backend)
    assert create(conn_id, UNKNOWN_MODEL, 10)
    with pytest.raises(CacheTooSmallError) as raised:
        create(conn_id, UNKNOWN_MODEL, 3)
    assert (raised.value.token_count, raised.value.minimum) == (3, 5)
    state = counts(emulator_with_new_model)
    assert state["count_tokens"] == 2  # counted (a free call), never compared
    assert state["create_cache"] == 2


def test_an_unknown_model_the_server_does_not_serve_is_a_model_error(
    emulator: EmulatorProcess,
    make_conn: ConnFactory,  # noqa: F811
) -> None:
    with pytest.raises(ModelNotFoundError, match=r"^model: 'gemini-9-experimental'"):
        create(conn_for(make_conn, emulator, "gemini_api"), UNKNOWN_MODEL, 5000)
    assert counts(emulator)["count_tokens"] == 1  # the free count finds out, before any create
    assert counts(emulator).get("create_cache", 0) == 0


@pytest.mark.parametrize("backend", ["gemini_api", "vertex_ai"])
@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("gemini-2.5-pr", "gemini-2.5-pro"),
        ("gemni-3.1-pro-preview", "gemini-3.1-pro-preview"),
        ("gemini-2.5-flsh", "gemini-2.5-flash"),
        ("models/gemini-2.5-flash-lte", "gemini-2.5-flash-lite"),
    ],
)
def test_a_model_typo_suggests_the_closest_known_name_not_always_flash(
    typed: str,
    meant: str,
    backend: str,
    emulator: EmulatorProcess,
    make_conn: ConnFactory,  # noqa: F811
) -> None:
    with pytest.raises(ModelNotFoundError) as raised:
        create(conn_for(make_conn, emulator, backend), typed, 5000)

    message = str(raised.value)
    assert message.startswith(f"model: {model_id(typed)!r} is not a model this backend serves (")
    assert raised.value.suggestions[0] == meant
    assert f"did you mean {meant!r}" in message
    assert counts(emulator).get("create_cache", 0) == 0


def test_a_name_close_to_nothing_gets_no_guess_but_the_known_names(
    emulator: EmulatorProcess,
    make_conn: ConnFactory,  # noqa: F811
) -> None:
    with pytest.raises(ModelNotFoundError) as raised:
        ContextCacheHook(conn_for(make_conn, emulator, "gemini_api")).count_tokens(
            model="gpt-4", contents="hi"
        )

    assert raised.value.suggestions == []
    assert "did you mean" not in str(raised.value)
    assert "no model name this provider knows is close (it knows gemini-2.0-flash, " in str(raised.value)
    assert "gemini-3-pro-preview" not in str(raised.value)  # shut down: never offered


@pytest.mark.parametrize(
    ("typed", "backend", "expected"),
    [
        ("gemini-2.5-pr", "gemini_api", ["gemini-2.5-pro"]),
        ("gemni-3.1-pro-preview", None, ["gemini-3.1-pro-preview"]),
        ("gemini-3-pro-previw", "gemini_api", ["gemini-3.1-pro-preview"]),  # the shut-down one's successor
        ("gemini-1.5-pro-02", "vertex_ai", ["gemini-1.5-pro-002"]),
        ("gemini-1.5-pro-02", "gemini_api", ["gemini-2.5-pro"]),  # 1.5 is not served there
        ("gpt-4", None, []),
        ("gemini-0-nonexistent", None, []),
    ],
)
def test_similar_models_are_the_close_names_served_on_the_backend(
    typed: str, backend: str | None, expected: list[str]
) -> None:
    assert similar_models(typed, backend) == expected


def test_min_tokens_still_overrides_the_table(emulator: EmulatorProcess, make_conn: ConnFactory) -> None:  # noqa: F811
    with pytest.raises(CacheTooSmallError) as raised:
        create(conn_for(make_conn, emulator, "gemini_api"), "gemini-2.5-flash", 3000, min_tokens=5000)
    assert (raised.value.token_count, raised.value.minimum) == (3000, 5000)
    assert counts(emulator).get("create_cache", 0) == 0


# -- shut-down models --------------------------------------------------------------------------------


def test_shut_down_is_judged_by_date() -> None:
    check_not_shut_down("gemini-3-pro-preview", today=dt.date(2026, 3, 8))
    with pytest.raises(
        CtxCacheConfigError, match=r"^model: 'gemini-3-pro-preview' was shut down on 2026-03-09"
    ):
        check_not_shut_down("models/gemini-3-pro-preview", today=TODAY)
    check_not_shut_down(UNKNOWN_MODEL, today=TODAY)


def test_the_row_of_a_name_is_looked_up_once_but_the_verdict_follows_the_date() -> None:
    """The fan-out checks its model on every call; the lookup is remembered per name, the date is not."""
    name = "models/gemini-3-pro-preview"
    assert facts_for(name) is MODEL_FACTS["gemini-3-pro-preview"]
    hits = _facts_by_name.cache_info().hits
    assert facts_for(name) is MODEL_FACTS["gemini-3-pro-preview"]
    assert _facts_by_name.cache_info().hits == hits + 1
    check_not_shut_down(name, today=dt.date(2026, 3, 8))
    with pytest.raises(CtxCacheConfigError, match="was shut down on 2026-03-09"):
        check_not_shut_down(name, today=dt.date(2026, 3, 10))
    check_not_shut_down(name, today=dt.date(2026, 3, 8))


@pytest.mark.parametrize("backend", ["gemini_api", "vertex_ai"])
def test_a_shut_down_model_is_refused_before_any_call_naming_its_replacement(
    backend: str,
    emulator: EmulatorProcess,
    make_conn: ConnFactory,  # noqa: F811
) -> None:
    conn_id = conn_for(make_conn, emulator, backend)
    with pytest.raises(CtxCacheConfigError) as raised:
        create(conn_id, "gemini-3-pro-preview", 5000)
    assert str(raised.value).startswith("model: 'gemini-3-pro-preview' was shut down on 2026-03-09")
    assert "'gemini-3.1-pro-preview'" in str(raised.value)
    hook = ContextCacheHook(conn_id)
    with pytest.raises(CtxCacheConfigError, match=r"^model: .*gemini-3\.1-pro-preview"):
        hook.generate(model="gemini-3-pro-preview", contents="hello")
    with pytest.raises(CtxCacheConfigError, match=r"^model: .*gemini-3\.1-pro-preview"):
        hook.count_tokens(model="gemini-3-pro-preview", contents="hello")
    assert sum(counts(emulator).values()) == 0
