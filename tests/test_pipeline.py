from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from modules.optimization.hook_pool import WorkerPool
from modules.optimization.pipeline import Pipeline, PipelineResult, Stage

WAIT = 5.0


@pytest.fixture
def gates() -> list[threading.Event]:
    return []


@pytest.fixture
def pool(gates: list[threading.Event]) -> Iterator[WorkerPool]:
    pool = WorkerPool(1, 4, name="test-pipeline")
    yield pool
    for gate in gates:
        gate.set()  # release stages left blocked by a timeout test
    pool.shutdown(wait=True)


def statuses(result: PipelineResult) -> dict[str, str]:
    return {r.name: r.status for r in result.results}


def test_context_flows_from_stage_to_stage(pool: WorkerPool) -> None:
    seen: list[dict[str, Any]] = []

    def meddle(ctx: dict[str, Any]) -> None:
        seen.append(dict(ctx))
        ctx["meddled"] = True  # its own copy: must not reach the pipeline's context

    pipeline = Pipeline(
        [
            Stage("parse", lambda ctx: {"words": ctx["text"].split()}),
            Stage("count", lambda ctx: {"count": len(ctx["words"])}),
            Stage("meddle", meddle),
        ],
        pool,
    )
    source = {"text": "a b c"}
    result = pipeline.run(source)
    assert result.context == {"text": "a b c", "words": ["a", "b", "c"], "count": 3}
    assert seen == [result.context]
    assert source == {"text": "a b c"}
    assert statuses(result) == {"parse": "ok", "count": "ok", "meddle": "ok"}
    assert result.aborted is False


def test_a_timed_out_stage_is_skipped_and_its_late_value_never_leaks(pool: WorkerPool, gates: list[threading.Event]) -> None:
    release, finished = threading.Event(), threading.Event()
    gates.append(release)

    def slow(ctx: dict[str, Any]) -> dict[str, Any]:
        release.wait(WAIT)
        ctx["late"] = True
        finished.set()
        return {"late": True}

    pipeline = Pipeline(
        [
            Stage("first", lambda ctx: {"a": 1}),
            Stage("slow", slow, timeout_s=0.05),
            Stage("last", lambda ctx: {"saw_late": "late" in ctx}),
        ],
        pool,
    )
    result = pipeline.run({})
    assert statuses(result) == {"first": "ok", "slow": "timeout", "last": "ok"}
    assert "50 ms" in result.results[1].error
    assert result.aborted is False
    release.set()
    assert finished.wait(WAIT)  # the stage did finish and return its value, too late
    assert result.context == {"a": 1, "saw_late": False}


def test_a_failing_optional_stage_is_recorded_and_skipped(pool: WorkerPool) -> None:
    def broken(ctx: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("missing")

    pipeline = Pipeline(
        [Stage("broken", broken), Stage("wrong_type", lambda ctx: [1]), Stage("after", lambda ctx: {"after": True})],  # type: ignore[arg-type, return-value]
        pool,
    )
    result = pipeline.run({"x": 0})
    assert statuses(result) == {"broken": "error", "wrong_type": "error", "after": "ok"}
    assert result.results[0].error == "KeyError: 'missing'"
    assert "returned list" in result.results[1].error
    assert result.context == {"x": 0, "after": True}
    assert result.aborted is False


def test_a_required_failure_aborts_and_skips_the_rest(pool: WorkerPool) -> None:
    ran: list[str] = []

    def gatekeeper(ctx: dict[str, Any]) -> None:
        raise ValueError("no")

    pipeline = Pipeline(
        [
            Stage("first", lambda ctx: {"first": 1}),
            Stage("gatekeeper", gatekeeper, required=True),
            Stage("second", lambda ctx: ran.append("second")),
            Stage("third", lambda ctx: ran.append("third")),
        ],
        pool,
    )
    result = pipeline.run({})
    assert result.aborted is True
    assert statuses(result) == {"first": "ok", "gatekeeper": "error", "second": "skipped", "third": "skipped"}
    assert "'gatekeeper'" in result.results[2].error and "ValueError: no" in result.results[2].error
    assert result.context == {"first": 1}
    assert ran == []


def test_a_required_stage_timing_out_aborts(pool: WorkerPool, gates: list[threading.Event]) -> None:
    never = threading.Event()
    gates.append(never)

    def stuck(ctx: dict[str, Any]) -> None:
        never.wait(WAIT)

    pipeline = Pipeline([Stage("stuck", stuck, timeout_s=0.05, required=True), Stage("after", lambda ctx: {"a": 1})], pool)
    result = pipeline.run({})
    assert result.aborted is True
    assert statuses(result) == {"stuck": "timeout", "after": "skipped"}


def test_then_and_plus_compose_new_pipelines(pool: WorkerPool) -> None:
    def add(key: str) -> Stage:
        return Stage(key, lambda ctx: {"trail": ctx.get("trail", "") + key})

    base = Pipeline([add("a")], pool)
    longer = base.then(add("b"))
    combined = longer + Pipeline([add("c"), add("d")])
    assert [s.name for s in base.stages] == ["a"]  # untouched by then()
    assert [s.name for s in longer.stages] == ["a", "b"]
    assert [s.name for s in combined.stages] == ["a", "b", "c", "d"]
    assert combined.run({}).context == {"trail": "abcd"}
    assert longer.run({}).context == {"trail": "ab"}


def test_the_default_executor_runs_stages() -> None:
    result = Pipeline([Stage("on_default", lambda ctx: {"thread": threading.current_thread().name})]).run({})
    assert result.context["thread"].startswith("hookopt-pipeline-")


def test_run_async_awaits_coroutine_stages_and_threads_the_others(pool: WorkerPool) -> None:
    import asyncio

    loop_threads: list[bool] = []

    async def on_loop(ctx: dict[str, Any]) -> dict[str, Any]:
        loop_threads.append(threading.current_thread() is threading.main_thread())
        return {"b": ctx["a"] + 1}

    def on_thread(ctx: dict[str, Any]) -> dict[str, Any]:
        loop_threads.append(threading.current_thread() is threading.main_thread())
        return {"a": 1}

    result = asyncio.run(Pipeline([Stage("first", on_thread), Stage("second", on_loop)]).run_async({}, executor=pool))
    assert result.context == {"a": 1, "b": 2} and not result.aborted
    assert loop_threads == [False, True]


def test_run_async_times_out_and_aborts_on_a_required_stage(pool: WorkerPool, gates: list[threading.Event]) -> None:
    import asyncio

    never = threading.Event()
    gates.append(never)

    async def slow(ctx: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(10)
        return {"late": True}

    def stuck(ctx: dict[str, Any]) -> dict[str, Any]:
        never.wait()
        return {"late": True}

    pipeline = Pipeline([Stage("slow", slow, timeout_s=0.05), Stage("stuck", stuck, timeout_s=0.05, required=True), Stage("after", lambda c: {"x": 1})])
    result = asyncio.run(pipeline.run_async({}, executor=pool))
    assert statuses(result) == {"slow": "timeout", "stuck": "timeout", "after": "skipped"}
    assert result.aborted and "late" not in result.context
