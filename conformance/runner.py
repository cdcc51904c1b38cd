"""Run cases against targets: start the targets, run every (case, target) pair on a
small thread pool, stop the targets, return the results."""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from .cases import CASES, Case, CaseContext, Fail, Result, ServerFault, Skip, Timing
from .cases.base import FAULT_SERVER, FAULT_TARGET, observe_url
from .clients import H1Error, H2Error
from .clients.h3_errors import H3Error
from .targets import DEFAULT_APP, TARGETS, Target, TargetUnavailable, start_target

Progress = Callable[[Result], None]


@dataclass(slots=True)
class TargetInfo:
    """A target as the report shows it."""

    name: str
    server: str = ""
    status: str = "ok"  # "ok", "unavailable", "failed"
    reason: str = ""


@dataclass(slots=True)
class SuiteResult:
    """Everything one run produced."""

    targets: list[TargetInfo]
    cases: list[Case]
    results: list[Result]
    duration: float = 0.0
    timing: Timing = field(default_factory=Timing)

    @property
    def failed(self) -> list[Result]:
        """The failing results."""
        return [r for r in self.results if r.status == "fail"]

    @property
    def faults(self) -> list[Result]:
        """Diagnosed faults of a server or proxy (the app did its part)."""
        return [r for r in self.results if r.status == "fault"]

    def get(self, case: str, target: str) -> Result | None:
        """The result of one pair."""
        for r in self.results:
            if r.case == case and r.target == target:
                return r
        return None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        counts: dict[str, int] = {}
        for r in self.results:
            counts[r.status] = counts.get(r.status, 0) + 1
        return {
            "ok": not self.failed,
            "server_faults": len(self.faults),
            "duration": round(self.duration, 2),
            "counts": counts,
            "timing": asdict(self.timing),
            "targets": [
                {"name": t.name, "server": t.server, "status": t.status, "reason": t.reason} for t in self.targets
            ],
            "cases": [{"name": c.name, "title": c.title} for c in self.cases],
            "results": [r.as_dict() for r in self.results],
        }


def run_case(case: Case, target: Target, timing: Timing) -> Result:
    """Run one case on one target (with one retry for timing cases), never raising."""
    reason = case.applies(target)
    if reason == "n/a":
        return Result(case.name, target.name, "n/a")
    if reason is not None:
        return Result(case.name, target.name, "skip", reason)
    # One retry for timing cases on the suite's own targets (a loaded machine); an
    # external endpoint is judged on what it showed (and an LLM answer costs).
    attempts = 1 + timing.retries if case.timing and target.app_endpoints else 1
    result = Result(case.name, target.name, "fail")
    for attempt in range(1, attempts + 1):
        result = _attempt(case, target, timing)
        result.attempts = attempt
        if result.status != "fail":
            break
    return result


def _attempt(case: Case, target: Target, timing: Timing) -> Result:
    ctx = CaseContext(target=target, timing=timing, case_name=case.name)
    t0 = time.monotonic()
    try:
        evidence = case.run(ctx)
        result = Result(case.name, target.name, "pass", evidence)
    except Skip as exc:
        result = Result(case.name, target.name, "skip", str(exc))
    except ServerFault as exc:
        result = Result(case.name, target.name, "fault", exc.evidence, exc.fault)
    except Fail as exc:
        result = Result(case.name, target.name, "fail", exc.evidence, exc.fault, details=exc.details)
    except TimeoutError as exc:
        if target.app_endpoints:
            result = Result(case.name, target.name, "fail", f"TimeoutError: {exc}", FAULT_TARGET)
        else:  # an external endpoint that took longer than --max-duration: no verdict
            result = Result(
                case.name,
                target.name,
                "skip",
                f"did not finish within --max-duration {timing.max_duration:g} s ({exc}): not judged",
            )
    except (H1Error, H2Error, H3Error) as exc:
        result = Result(case.name, target.name, "fail", f"{type(exc).__name__}: {exc}", FAULT_SERVER)
    except Exception as exc:
        tb = traceback.format_exc(limit=3)
        result = Result(
            case.name, target.name, "fail", f"{type(exc).__name__}: {exc}", FAULT_TARGET, details={"traceback": tb}
        )
    result.duration = time.monotonic() - t0
    for key, value in ctx.details.items():
        result.details.setdefault(key, value)
    if ctx.timelines:
        result.details["timelines"] = [tl.as_dict() for tl in ctx.timelines]
    dead = target.alive()
    if dead is not None:
        result.status = "fail"
        result.fault = FAULT_SERVER
        result.evidence = f"server died: {dead}; {result.evidence}"
    return result


def stop_all(targets: Sequence[Target], timeout: float = 5.0) -> None:
    """Stop targets, all at once (each waits up to ``timeout`` s for its server to exit
    after SIGTERM, then kills it)."""
    threads = [threading.Thread(target=t.stop, args=(timeout,)) for t in targets]
    for th in threads:
        th.start()
    for th in threads:
        th.join()


def _prefetch(target: Target, cases: Sequence[Case], timing: Timing) -> None:
    """Make the shared request of an external target if a selected case reads it (its
    result, or its error, is kept for the cases)."""
    if any(c.shared and c.applies(target) is None for c in cases):
        try:
            observe_url(CaseContext(target=target, timing=timing, case_name="observe"), allow_silent=True)
        except Exception:
            pass


def _alone(case: Case, target: Target) -> bool:
    return case.alone and target.hooks is None and case.applies(target) is None


def _start_all(
    names: Sequence[str], app: str, env: dict[str, str] | None
) -> tuple[dict[str, Target], list[TargetInfo]]:
    started: dict[str, Target] = {}
    infos: dict[str, TargetInfo] = {n: TargetInfo(n) for n in names}
    lock = threading.Lock()

    def start(name: str) -> None:
        try:
            t = start_target(name, app, env=env)
        except TargetUnavailable as exc:
            infos[name].status, infos[name].reason = "unavailable", str(exc)
            return
        except Exception as exc:
            infos[name].status, infos[name].reason = "failed", f"{type(exc).__name__}: {exc}"
            return
        infos[name].server = t.server
        with lock:
            started[name] = t

    threads = [threading.Thread(target=start, args=(n,)) for n in names]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return started, [infos[n] for n in names]


def run_suite(
    targets: Sequence[str] | None = None,
    cases: Sequence[str] | None = None,
    *,
    timing: Timing | None = None,
    jobs: int = 4,
    app: str = DEFAULT_APP,
    env: dict[str, str] | None = None,
    prebuilt: Sequence[Target] = (),
    progress: Progress | None = None,
) -> SuiteResult:
    """Start the named targets (default: all), run the cases (default: all), stop them.

    ``prebuilt`` targets (e.g. an external URL) are used as they are and not stopped.
    """
    timing = timing or Timing()
    t0 = time.monotonic()
    names = list(TARGETS) if targets is None else list(targets)
    for n in names:
        if n not in TARGETS:
            raise ValueError(f"unknown target {n!r}; known: {', '.join(TARGETS)}")
    selected = [CASES[c] for c in (cases if cases is not None else CASES)]
    started, infos = _start_all(names, app, env) if names else ({}, [])
    all_targets: list[Target] = list(prebuilt) + [started[i.name] for i in infos if i.name in started]
    infos = [TargetInfo(t.name, t.server) for t in prebuilt] + infos
    results: list[Result] = []
    try:
        for info in infos:
            if info.status == "ok":
                continue
            for c in selected:
                status = "skip" if info.status == "unavailable" else "fail"
                fault = None if status == "skip" else FAULT_SERVER
                results.append(Result(c.name, info.name, status, f"target {info.status}: {info.reason}", fault))

        limits = {id(t): threading.Semaphore(t.concurrency) for t in all_targets if t.concurrency}

        def job(pair: tuple[Case, Target]) -> Result:
            limit = limits.get(id(pair[1]))
            if limit is None:
                r = run_case(pair[0], pair[1], timing)
            else:
                with limit:
                    r = run_case(pair[0], pair[1], timing)
            if progress is not None:
                progress(r)
            return r

        def one_by_one(pairs: list[tuple[Case, Target]]) -> list[Result]:
            return [job(p) for p in pairs]

        # With --url, the shared request first, with nothing else in flight there: an
        # endpoint that serves one generation at a time would queue it behind the rest.
        external = [t for t in all_targets if not t.app_endpoints]
        with ThreadPoolExecutor(max_workers=max(1, len(external))) as pool:
            list(pool.map(lambda t: _prefetch(t, selected, timing), external))
        # Then the cases that read server-wide state, one at a time per target, while
        # nothing else is in flight there.
        alone = [[(c, t) for c in selected if _alone(c, t)] for t in all_targets]
        with ThreadPoolExecutor(max_workers=max(1, len(all_targets))) as pool:
            for rs in pool.map(one_by_one, alone):
                results += rs
        # Then the heavy cases one after the other on their own thread, beside a pool
        # of ``jobs`` for the rest (interleaving targets so concurrent jobs hit
        # different servers).
        rest = [(c, t) for t in all_targets for c in selected if not _alone(c, t)]
        rest.sort(key=lambda p: (selected.index(p[0]), all_targets.index(p[1])))
        heavy = [p for p in rest if p[0].heavy and p[0].applies(p[1]) is None]
        light = [p for p in rest if p not in heavy]
        with ThreadPoolExecutor(max_workers=max(1, jobs) + 1) as pool:
            heavy_done = pool.submit(one_by_one, heavy)
            light_done = [pool.submit(job, p) for p in light]
            results += [f.result() for f in light_done]
            results += heavy_done.result()
    finally:
        stop_all(list(started.values()))
    order_c = {c.name: i for i, c in enumerate(selected)}
    order_t = {t.name: i for i, t in enumerate(infos)}
    results.sort(key=lambda r: (order_c.get(r.case, 0), order_t.get(r.target, 0)))
    return SuiteResult(infos, selected, results, time.monotonic() - t0, timing)
