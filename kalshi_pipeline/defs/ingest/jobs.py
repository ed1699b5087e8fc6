"""Job `kalshi_ingest`: one op that runs the stream engine until the run is terminated.

How it behaves, and why:
- `in_process_executor`: the op runs in the run worker itself, so killing the worker leaves no
  orphan writer behind (the multiprocess executor would).
- The main thread only waits (`time.sleep(1)`, then `engine.check()`); the engine reads and writes
  on threads of its own. Dagster's termination arrives as SIGINT in the main thread, raising
  `DagsterExecutionInterruptedError` (a BaseException): the op stops the engine, which flushes
  everything received into DuckDB within 10 s, and re-raises, so the run ends CANCELED.
- No RetryPolicy (it would turn a termination into a retry); the keep-alive sensor restarts runs.
- Event-log rows are expensive: an "alive" line at most every `alive_every_s` (60 s), a
  `raw_ticks` materialization with numeric metadata every `metadata_every_s` (180 s) and one as
  soon as the first ticks are stored; per-batch detail goes to the Python logger
  `kalshi_pipeline.defs.ingest.jobs`, which reaches the run's compute logs (stderr) only.
- Tags for the keep-alive sensor: `kalshi/worker` (host, pid and start time of this worker, so
  a worker killed with its whole process tree is seen dead at once on this host) before anything
  can fail, and `kalshi/streamed` once the first ticks are stored (only such a run's config is
  relaunched).
Handover (make before break, see `stream/engine.py`): a run started while another streams into
the same database is its successor. It connects, subscribes and lands frames, then asks the
running one to hand over; that run stores everything it received, gives up the database, logs
whom it handed over to and ends SUCCESS; the successor takes the database and stores what it
received meanwhile, each tick once. So:
- Rotation: after `rotate_after_s` (6 h) the run tags itself `kalshi/rotation: due`; the
  keep-alive sensor launches a successor with the same run config, and the run hands over to it.
  No successor within `rotation_wait_s` (the sensor is off, or launches fail): the run ends
  SUCCESS anyway, and whatever starts next loads what it left.
- Mode switch: a Launchpad launch with another mode is a successor like any other; both runs end
  green. The keep-alive sensor copies the newest run's run config, so the new mode stays. The
  job carries NO `kalshi/shard` tag: dagster.yaml limits runs per value of that tag to one, so a
  tagged successor would wait in the queue behind the very run it should replace; only the
  sensor's relaunches carry `kalshi/shard: all`.
- A successor not live within `handover_timeout_s` (the feed's setting) fails; the running run is
  never disturbed. A running run that does not answer the request within a minute (a run of an
  older version, a hung worker) is terminated as before, and ends CANCELED.
- Older QUEUED runs are cancelled at once: they never streamed.
"""

import logging
import os
import socket
import sys
import time
from typing import Any

import dagster as dg
import duckdb
import psutil
from dagster._core.errors import DagsterExecutionInterruptedError
from dagster._utils.interrupts import capture_interrupts, check_captured_interrupt
from pydantic import Field

from kalshi_pipeline.defs.ingest.assets import raw_ticks
from kalshi_pipeline.defs.ingest.runs import (
    DATABASE_TAG,
    DEFAULT_ALIVE_EVERY_S,
    DEFAULT_METADATA_EVERY_S,
    DEFAULT_ROTATE_AFTER_S,
    ENVIRONMENT_TAG,
    JOB_NAME,
    MODE_TAG,
    OP_NAME,
    ROTATION_DUE,
    ROTATION_TAG,
    SENSOR_NAME,
    STREAMED,
    STREAMED_TAG,
    WORKER_TAG,
    unfinished,
    worker_tag,
)
from kalshi_pipeline.defs.resources import KalshiFeedResource, WarehouseResource
from kalshi_pipeline.defs.validation import checked_op
from kalshi_pipeline.kalshi.errors import KalshiConfigError
from kalshi_pipeline.stream.config import ConfigError, Mode, StreamConfig
from kalshi_pipeline.stream.engine import Engine, EngineError
from kalshi_pipeline.warehouse import Warehouse, WarehouseError

log = logging.getLogger(__name__)

DEFAULT_ROTATION_WAIT_S = 300.0
DETAIL_EVERY_S = 10.0
STOP_TIMEOUT_S = 10.0
CHECK_LOCK_WAIT_S = 30.0  # the checks wait this long for the writer's short flushes


class IngestConfig(dg.Config):
    """How long a run lasts and how often it reports; the feed itself is `kalshi_feed`'s."""

    rotate_after_s: float = Field(
        default=DEFAULT_ROTATE_AFTER_S,
        gt=0,
        description="after this many seconds (more than 0) the run asks the keep-alive sensor "
        "for a successor, hands over to it without a gap and ends with success",
    )
    rotation_wait_s: float = Field(
        default=DEFAULT_ROTATION_WAIT_S,
        ge=0,
        description="when rotation is due and no successor has taken over after this many seconds "
        "(0 or more; the sensor is off?), the run ends with success anyway",
    )
    metadata_every_s: float = Field(
        default=DEFAULT_METADATA_EVERY_S,
        gt=0,
        description="seconds between raw_ticks materializations (more than 0; numeric metadata, "
        "plotted)",
    )
    alive_every_s: float = Field(
        default=DEFAULT_ALIVE_EVERY_S,
        gt=0,
        description="seconds between 'alive' lines in the event log (more than 0); the keep-alive "
        "sensor takes a run silent for 4 of these as dead",
    )


def _detail_logging() -> None:
    """Send the engine's INFO lines to stderr (the run's compute logs), once per process.

    Only where nobody configured logging (a run worker); a host process that did (pytest, an
    embedding application) keeps its own handlers and levels.
    """
    package = logging.getLogger("kalshi_pipeline")
    if logging.getLogger().handlers or package.handlers:
        return
    if not getattr(package, "_kalshi_detail_handler", False):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        package.addHandler(handler)
        package.setLevel(logging.INFO)
        package._kalshi_detail_handler = True  # type: ignore[attr-defined]


def _preflight(cfg: StreamConfig) -> None:
    """Fail the run at once, before touching any other run, when it cannot possibly stream."""
    problem = cfg.kalshi.credentials_problem()
    if problem:
        raise dg.Failure(description=problem, allow_retries=False)
    try:
        if cfg.mode in (Mode.WEBSOCKET, Mode.BOTH):
            cfg.kalshi.signer()
        Warehouse(cfg.database).check_writable()
    except (KalshiConfigError, WarehouseError) as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None


def _older_runs(
    context: dg.OpExecutionContext, statuses: list[dg.DagsterRunStatus]
) -> list[dg.DagsterRun]:
    """Other kalshi_ingest runs in `statuses` created before this one (a newer run takes over
    from us, not the other way round)."""
    instance = context.instance
    mine = instance.get_run_records(dg.RunsFilter(run_ids=[context.run_id]), limit=1)
    my_created = mine[0].create_timestamp if mine else None
    return [
        record.dagster_run
        for record in instance.get_run_records(dg.RunsFilter(job_name=JOB_NAME, statuses=statuses))
        if record.dagster_run.run_id != context.run_id
        and (my_created is None or record.create_timestamp <= my_created)
    ]


def cancel_older_queued(context: dg.OpExecutionContext) -> None:
    """Cancel older kalshi_ingest runs still waiting in the queue: they never streamed."""
    instance = context.instance
    for run in _older_runs(context, [dg.DagsterRunStatus.QUEUED]):
        run_id = run.run_id
        try:
            instance.run_coordinator.cancel_run(run_id)
            context.log.info(f"cancelled queued run {run_id}: this run streams instead")
        except Exception as exc:
            log.warning("cancelling queued run %s failed: %s", run_id, exc)


def take_over(context: dg.OpExecutionContext) -> list[str]:
    """Terminate every other unfinished kalshi_ingest run created before this one (when a
    running run does not answer a handover request)."""
    instance = context.instance
    stopped = []
    for run in _older_runs(context, unfinished()):
        context.log.info(
            f"taking over from run {run.run_id} ({run.status.value}): terminating it; it flushes "
            "and ends CANCELED"
        )
        try:
            if run.status == dg.DagsterRunStatus.QUEUED:
                ok = instance.run_coordinator.cancel_run(run.run_id)
            else:
                ok = instance.run_launcher.terminate(run.run_id)
        except Exception as exc:
            ok = False
            log.warning("terminating run %s failed: %s", run.run_id, exc)
        if ok:
            stopped.append(run.run_id)
        else:
            context.log.warning(
                f"could not reach run {run.run_id} to terminate it; if its worker is gone, the "
                "keep-alive sensor marks it failed once its events go stale"
            )
    return stopped


class _Reporter:
    """Throttled reporting: alive lines, materializations, per-batch detail."""

    def __init__(
        self,
        context: dg.OpExecutionContext,
        config: IngestConfig,
        mode: str,
        warehouse: Warehouse | None = None,
    ) -> None:
        self.context = context
        self.config = config
        self.mode = mode
        self.warehouse = warehouse
        now = time.monotonic()
        self.last_alive = now
        self.alive_ticks = 0
        self.last_detail = now
        self.last_meta: float | None = None
        self.meta_ticks = 0
        self.started = now

    def materialize(self, summary: dict[str, Any]) -> None:
        now = time.monotonic()
        stored = int(summary["ticks_stored"])
        since = self.last_meta if self.last_meta is not None else self.started
        rate = (stored - self.meta_ticks) / max(1e-6, now - since)
        metadata: dict[str, Any] = {
            "rows_stored": dg.MetadataValue.int(stored),
            "ticks_per_s": dg.MetadataValue.float(round(rate, 2)),
            "reconnects": dg.MetadataValue.int(int(summary["reconnects"])),
            "fallback_s": dg.MetadataValue.float(float(summary["fallback_seconds"])),
            "backlog_bytes": dg.MetadataValue.int(int(summary["backlog_bytes"])),
        }
        # Lag is received minus Kalshi's sending_ts_ms (the market's ts_ms for frames without
        # it), which REST pages do not carry: in http mode the two keys are absent rather than a
        # made-up number.
        for key in ("lag_p50_ms", "lag_p99_ms"):
            if summary.get(key) is not None:
                metadata[key] = dg.MetadataValue.float(round(float(summary[key]), 2))
        metadata["mode"] = dg.MetadataValue.text(self.mode)
        metadata["source"] = dg.MetadataValue.text(str(summary["source"]))
        self.context.log_event(dg.AssetMaterialization(asset_key=raw_ticks.key, metadata=metadata))
        self.last_meta = now
        self.meta_ticks = stored
        self.evaluate_checks()

    def evaluate_checks(self) -> None:
        """The checks on raw_ticks, logged right after its materialization by the same run, so
        the UI shows them as the newest materialization's results."""
        if self.warehouse is None:
            return
        from kalshi_pipeline.defs.reports.checks import raw_ticks_evaluations

        # Dagster's interrupt (terminate) must not land inside a DuckDB call: DuckDB would abort
        # the query half-way and its connection could be left holding the file. Hold it until
        # the checks are done, then honour it.
        interrupted = False
        try:
            with capture_interrupts():
                try:
                    with self.warehouse.connect(timeout_s=CHECK_LOCK_WAIT_S) as con:
                        evaluations = raw_ticks_evaluations(con)
                finally:
                    interrupted = check_captured_interrupt()
        except (WarehouseError, duckdb.Error) as exc:
            if interrupted:
                raise DagsterExecutionInterruptedError() from exc
            self.context.log.warning(
                f"the checks on raw_ticks were not evaluated this time ({exc}); the next "
                "materialization tries again"
            )
            return
        if interrupted:
            raise DagsterExecutionInterruptedError()
        for evaluation in evaluations:
            self.context.log_event(evaluation)

    def tick(self, summary: dict[str, Any]) -> None:
        now = time.monotonic()
        stored = int(summary["ticks_stored"])
        if now - self.last_detail >= DETAIL_EVERY_S:
            self.last_detail = now
            log.info(
                "stored=%d ticks/s=%s source=%s backlog=%dB lag_p50=%s lag_p99=%s reconnects=%s "
                "last_event=%s",
                stored,
                summary["ticks_per_s"],
                summary["source"],
                summary["backlog_bytes"],
                summary["lag_p50_ms"],
                summary["lag_p99_ms"],
                summary["reconnects"],
                summary["last_event"],
            )
        first = self.last_meta is None and stored > 0
        if first:
            # One tag, once: the keep-alive sensor relaunches only configs that streamed.
            self.context.instance.add_run_tags(self.context.run_id, {STREAMED_TAG: STREAMED})
        due = self.last_meta is not None and now - self.last_meta >= self.config.metadata_every_s
        if first or due:
            self.materialize(summary)
        if now - self.last_alive >= self.config.alive_every_s:
            self.context.log.info(
                f"alive: {self.mode} mode, reading {summary['source']}, {stored} ticks stored "
                f"(+{stored - self.alive_ticks} in {now - self.last_alive:.0f}s), backlog "
                f"{summary['backlog_bytes']} B, last feed event: {summary['last_event']}"
            )
            self.last_alive = now
            self.alive_ticks = stored


def _stop(context: dg.OpExecutionContext, engine: Engine, reason: str) -> bool:
    if not hasattr(engine, "supervisor"):  # start() failed before anything ran
        return True
    try:
        drained = engine.stop(timeout_s=STOP_TIMEOUT_S, reason=reason)
    except Exception as exc:
        context.log.error(f"stopping the engine failed: {type(exc).__name__}: {exc}")
        return False
    summary = engine.summary(fresh=True)
    if engine.superseded:  # the engine that took over loads what this one received
        context.log.info(
            f"stream stopped ({reason}): {summary['ticks_stored']} ticks stored by this run; the "
            f"{summary['backlog_bytes']} bytes it received since are in the landing log, which "
            "the run that took over loads"
        )
    elif drained:
        context.log.info(
            f"stream stopped ({reason}): everything received is in DuckDB "
            f"({summary['ticks_stored']} ticks stored by this run)"
        )
    else:
        context.log.warning(
            f"stream stopped ({reason}) with {summary['backlog_bytes']} bytes not yet in DuckDB; "
            "they stay in the landing log and the next run loads them"
        )
    return drained


@dg.op(
    name=OP_NAME,
    description="Run the stream engine (websocket, http or both) into DuckDB until terminated.",
)
def _stream_ticks(
    context: dg.OpExecutionContext,
    config: IngestConfig,
    kalshi_feed: KalshiFeedResource,
    warehouse: WarehouseResource,
) -> None:
    _detail_logging()
    try:
        cfg = kalshi_feed.stream_config(database=warehouse.path)
    except (ConfigError, KalshiConfigError, WarehouseError) as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    # Recorded before anything can fail, so `status` shows what a failed run was set to do.
    context.instance.add_run_tags(
        context.run_id,
        {
            MODE_TAG: cfg.mode.value,
            ENVIRONMENT_TAG: cfg.kalshi.env.value,
            DATABASE_TAG: str(cfg.database.resolve()),
            WORKER_TAG: worker_tag(
                socket.gethostname(), os.getpid(), psutil.Process().create_time()
            ),
        },
    )
    _preflight(cfg)
    cancel_older_queued(context)
    engine = Engine(cfg, label=f"run {context.run_id}")
    reporter = _Reporter(context, config, cfg.mode.value, Warehouse(cfg.database))
    url = cfg.kalshi.rest_url if cfg.mode is Mode.HTTP else cfg.kalshi.ws_url
    try:
        try:
            engine.start()
        except (KalshiConfigError, WarehouseError) as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        successor = (
            f"; run worker pid {os.getpid()} succeeds pid {engine.predecessor} (it streams until "
            "this run's feed is live, then hands the database over)"
            if engine.predecessor
            else f"; run worker pid {os.getpid()}"
        )
        context.log.info(
            f"streaming {cfg.scope.describe()} from {cfg.kalshi.env.value} ({url}) in "
            f"{cfg.mode.value} mode into {cfg.database}{successor}; rotating after "
            f"{config.rotate_after_s:.0f}s"
        )
        rotation_due: float | None = None
        escalated = False
        while engine.finished is None:
            time.sleep(1.0)
            engine.check()
            reporter.tick(engine.summary())
            now = time.monotonic()
            if rotation_due is None and now - reporter.started >= config.rotate_after_s:
                rotation_due = now
                context.instance.add_run_tags(context.run_id, {ROTATION_TAG: ROTATION_DUE})
                context.log.info(
                    f"rotation due after {config.rotate_after_s:.0f}s: the keep-alive sensor "
                    "starts a successor, and this run hands over to it once its feed is live"
                )
            if rotation_due is not None and now - rotation_due >= config.rotation_wait_s:
                engine.finished = (
                    f"rotation after {config.rotate_after_s:.0f}s; no successor took over within "
                    f"{config.rotation_wait_s:.0f}s (is {SENSOR_NAME} on?)"
                )
                break
            if engine.handover_stalled and not escalated:
                escalated = True
                context.log.warning(
                    f"pid {engine.predecessor} has not handed the database over a minute after "
                    "this run asked (an older version, or a hung worker): terminating the runs "
                    "before this one"
                )
                take_over(context)
    except DagsterExecutionInterruptedError:
        _stop(context, engine, "dagster run terminated")
        raise
    except EngineError as exc:
        _stop(context, engine, f"engine failed: {exc}")
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    except BaseException as exc:
        if _interrupted(exc):
            # Dagster's interrupt landed inside a DuckDB call (the checks after a
            # materialization), which reports it as its own "Query interrupted" error
            _stop(context, engine, "dagster run terminated")
            raise DagsterExecutionInterruptedError() from exc
        _stop(context, engine, f"op failed: {type(exc).__name__}")
        raise
    _stop(context, engine, engine.finished)
    context.log.info(f"run ends: {engine.finished}")
    reporter.materialize(engine.summary(fresh=True))


def _interrupted(exc: BaseException) -> bool:
    """Whether `exc` was raised while handling Dagster's interrupt (somewhere in its chain)."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, DagsterExecutionInterruptedError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


stream_ticks = checked_op(_stream_ticks, IngestConfig)


@dg.job(
    name=JOB_NAME,
    executor_def=dg.in_process_executor,
    description="Stream Kalshi ticks into DuckDB. Kept running by the sensor "
    "kalshi_ingest_keepalive; launch it with another resources.kalshi_feed.config.mode to switch "
    "feeds (the running run is taken over).",
)
def kalshi_ingest_job() -> None:
    stream_ticks()
