"""End to end: `kalshi-pipeline dev` (real `dagster dev`, daemon, code server, run workers) against
the simulator, driven only through Dagster's GraphQL API, the way an operator drives the UI.

One test walks the whole life of the stream, because starting the stack is the slow part:
the sensor starts the stream; a Launchpad run switches it to http and the old run hands over
(ends SUCCESS, the feeds overlapping); terminating a run flushes it and the sensor relaunches it
with the same config; a SIGKILLed run worker is replaced within 60 s with nothing stored twice;
a switch back to websocket hands over again; raw_ticks gets materializations with numeric
metadata and passes its freshness policy; stopping `dev` leaves no process behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import psutil
import pytest
import requests
from dagster._core.instance.ref import InstanceRef
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

from kalshi_pipeline.ports import free_port
from kalshi_pipeline.stream.landing import list_segments
from kalshi_pipeline.warehouse import Warehouse
from kalshi_pipeline.warehouse.paths import landing_folder
from kalshi_pipeline.warehouse.status import landing_positions
from kalshi_pipeline_tests.helpers import query, wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
HTTP_CONFIG = {
    "resources": {"kalshi_feed": {"config": {"mode": "http"}}},
    "ops": {"stream_ticks": {"config": {"metadata_every_s": 10, "alive_every_s": 10}}},
}
WS_CONFIG = {
    "resources": {"kalshi_feed": {"config": {"mode": "websocket"}}},
    "ops": {"stream_ticks": {"config": {"metadata_every_s": 10, "alive_every_s": 10}}},
}

RUNS_QUERY = """
query Runs {
  runsOrError(filter: {pipelineName: "kalshi_ingest"}) {
    ... on Runs { results { runId status creationTime runConfigYaml tags { key value } } }
  }
}
"""
LOGS_QUERY = """
query Logs($runId: ID!) {
  logsForRun(runId: $runId) {
    ... on EventConnection { events { __typename ... on MessageEvent { message } } }
  }
}
"""
MATERIALIZATIONS_QUERY = """
query Materializations {
  assetOrError(assetKey: {path: ["raw_ticks"]}) {
    ... on Asset {
      assetMaterializations(limit: 50) {
        runId
        metadataEntries {
          label
          __typename
          ... on IntMetadataEntry { intValue }
          ... on FloatMetadataEntry { floatValue }
        }
      }
    }
  }
}
"""
FRESHNESS_QUERY = """
query Freshness {
  assetNodeOrError(assetKey: {path: ["raw_ticks"]}) {
    ... on AssetNode {
      freshnessStatusInfo { freshnessStatus }
      internalFreshnessPolicy {
        ... on TimeWindowFreshnessPolicy { failWindowSeconds warnWindowSeconds }
      }
    }
  }
}
"""


@dataclass
class Run:
    run_id: str
    status: str
    created: float
    config_yaml: str
    tags: dict[str, str]

    @property
    def mode(self) -> str | None:
        match = re.search(r"mode: (\w+)", self.config_yaml)
        return match.group(1) if match else None


@dataclass
class Stack:
    proc: subprocess.Popen[bytes]
    port: int
    home: Path
    db: Path
    log: Path

    @property
    def client(self) -> DagsterGraphQLClient:
        return DagsterGraphQLClient("127.0.0.1", port_number=self.port)

    def graphql(self, q: str, **variables: Any) -> Any:
        resp = requests.post(
            f"http://127.0.0.1:{self.port}/graphql",
            json={"query": q, "variables": variables},
            timeout=30,
        )
        resp.raise_for_status()
        body = resp.json()
        assert not body.get("errors"), body["errors"]
        return body["data"]

    def runs(self) -> list[Run]:
        results = self.graphql(RUNS_QUERY)["runsOrError"]["results"]
        return [
            Run(
                r["runId"],
                r["status"],
                r["creationTime"],
                r["runConfigYaml"],
                {t["key"]: t["value"] for t in r["tags"]},
            )
            for r in results
        ]

    def run(self, run_id: str) -> Run:
        (found,) = [r for r in self.runs() if r.run_id == run_id]
        return found

    def wait_status(self, run_id: str, status: str, timeout: float) -> Run:
        return wait_for(
            lambda: (r := self.run(run_id)).status == status and r,
            timeout=timeout,
            interval=0.5,
            what=f"run {run_id} {status}",
        )

    def wait_sensor_run(self, restart_of: str | None, timeout: float) -> Run:
        def launched() -> Run | None:
            for r in self.runs():
                if r.tags.get("dagster/sensor_name") != "kalshi_ingest_keepalive":
                    continue
                if restart_of is None or r.tags.get("kalshi/restart_of") == restart_of:
                    return r if r.status == "STARTED" else None
            return None

        return wait_for(
            launched, timeout=timeout, interval=0.5, what=f"sensor run after {restart_of}"
        )

    def worker_pid(self, run_id: str) -> int:
        def pid() -> int | None:
            events = self.graphql(LOGS_QUERY, runId=run_id)["logsForRun"]["events"]
            for e in events:
                match = re.search(r"run worker pid (\d+)", e.get("message") or "")
                if match:
                    return int(match.group(1))
            return None

        return wait_for(pid, timeout=30, what=f"worker pid of {run_id}")

    def launch(self, run_config: dict[str, Any]) -> str:
        """A Launchpad launch of kalshi_ingest, as an operator makes it."""
        return self.client.submit_job_execution(
            "kalshi_ingest",
            repository_location_name="kalshi_pipeline",
            repository_name="__repository__",
            run_config=run_config,
        )

    def messages(self, run_id: str) -> list[str]:
        events = self.graphql(LOGS_QUERY, runId=run_id)["logsForRun"]["events"]
        return [e.get("message") or "" for e in events]

    def handed_over(self, old: str, new: str, timeout: float = 90) -> None:
        """`old` handed the stream over to `new`: it ended SUCCESS saying so."""
        self.wait_status(old, "SUCCESS", timeout=timeout)
        said = [m for m in self.messages(old) if f"handed over to run {new}" in m]
        assert said, self.messages(old)[-8:]

    def overlap_s(self, source: str, new: str, since: float) -> float:
        """Seconds both runs received: from the successor's first `source` tick (received after
        `since`) to when its predecessor stopped reading (its `stop` feed event)."""
        first, stopped = query(
            self.db,
            "SELECT (SELECT epoch(min(received_at)) FROM ticks WHERE source = ? "
            "        AND received_at > to_timestamp(?)), "
            "       (SELECT epoch(max(occurred_at)) FROM feed_events WHERE kind = 'stop' "
            "        AND detail LIKE ?)",
            [source, since, f"handed over to run {new}%"],
        )[0]
        assert first is not None and stopped is not None, (first, stopped)
        return float(stopped) - float(first)

    def ticks_since(self, source: str, since: float) -> int:
        return query(
            self.db,
            "SELECT count(*) FROM ticks WHERE source = ? AND stored_at > to_timestamp(?)",
            [source, since],
        )[0][0]

    def unloaded_bytes_of(self, pid: int) -> int:
        with Warehouse(self.db).connect(read_only=True) as con:
            positions = landing_positions(con)
        return sum(
            s.path.stat().st_size - positions.get(s.name, 0)
            for s in list_segments(landing_folder(self.db))
            if s.pid == pid
        )

    def process_groups(self) -> set[int]:
        groups = set()
        for child in psutil.Process(self.proc.pid).children(recursive=True):
            try:
                groups.add(os.getpgid(child.pid))
            except ProcessLookupError:
                continue
        return groups


def sigint_ignored(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
    return False


def group_members(groups: set[int]) -> list[str]:
    alive = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if os.getpgid(p.pid) in groups:
                alive.append(f"{p.pid} {' '.join(p.info['cmdline'] or [])[:100]}")
        except (ProcessLookupError, psutil.Error):
            continue
    return alive


@pytest.fixture
def stack(tmp_path: Path, kalshi_home: Path) -> Iterator[Stack]:
    """`kalshi-pipeline dev` with its own simulator."""
    with run_stack(tmp_path) as s:
        yield s


@contextlib.contextmanager
def run_stack(tmp_path: Path, sim: Any = None) -> Iterator[Stack]:
    """`kalshi-pipeline dev`, with its own simulator, or streaming from `sim` when given."""
    port = free_port()
    home = tmp_path / "dagster_home"
    db = tmp_path / "data" / "kalshi.duckdb"
    log = tmp_path / "dev.log"
    env = {
        **os.environ,
        "KALSHI_DUCKDB_PATH": str(db),
        "FRESHNESS_DAEMON_INTERVAL_SECONDS": "5",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DAGSTER_HOME", None)
    cmd = [sys.executable, "-m", "kalshi_pipeline.devserver", "--port", str(port)]
    if sim is None:
        cmd += ["--sim-port", "0", "--sim-markets", "200", "--sim-rate", "100"]
    else:
        cmd += ["--no-simulator"]
        env.update(KALSHI_ENV="local", KALSHI_REST_URL=sim.rest_url, KALSHI_WS_URL=sim.ws_url)
    cmd += ["--dagster-home", str(home)]
    with log.open("wb") as out:
        # Started the way `make run &` from a script starts it: with SIGINT ignored, which every
        # child would inherit unless `dev` resets it.
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
    s = Stack(proc, port, home, db, log)
    groups: set[int] = set()
    try:
        yield s
    finally:
        if proc.poll() is None:
            groups = s.process_groups()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()
        for pgid in groups:  # only after a failed test: never leave a stack behind
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)


def _tail(path: Path, lines: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _numeric_metadata(stack: Stack) -> Callable[[], list[dict[str, float]]]:
    def fetch() -> list[dict[str, float]]:
        out = []
        mats = stack.graphql(MATERIALIZATIONS_QUERY)["assetOrError"]["assetMaterializations"]
        for m in mats:
            values = {}
            for e in m["metadataEntries"]:
                if e["__typename"] == "IntMetadataEntry":
                    values[e["label"]] = float(e["intValue"])
                elif e["__typename"] == "FloatMetadataEntry":
                    values[e["label"]] = float(e["floatValue"])
            out.append(values)
        return out

    return fetch


def test_dev_keeps_the_stream_alive_switches_mode_and_stops_cleanly(stack: Stack) -> None:
    started = time.monotonic()
    client = stack.client

    # The sensor starts the stream on its own; ticks reach DuckDB.
    wait_for(
        lambda: (
            "kalshi_pipeline is up" in stack.log.read_text(errors="replace")
            or stack.proc.poll() is not None
        ),
        timeout=150,
        what="kalshi-pipeline dev to be up",
    )
    assert stack.proc.poll() is None, _tail(stack.log)
    try:
        first = stack.wait_sensor_run(None, timeout=150)
    except AssertionError:
        pytest.fail(f"no sensor-launched run; dev log:\n{_tail(stack.log)}")
    assert first.tags["kalshi/shard"] == "all"
    wait_for(
        lambda: stack.db.exists() and stack.ticks_since("websocket", 0) > 0,
        timeout=60,
        what="websocket ticks in DuckDB",
    )

    # Bad run config is refused at launch, naming the field, and creates no run.
    runs_before = len(stack.runs())
    with pytest.raises(DagsterGraphQLClientError, match="poll_interval_s"):
        client.submit_job_execution(
            "kalshi_ingest",
            repository_location_name="kalshi_pipeline",
            repository_name="__repository__",
            run_config={"resources": {"kalshi_feed": {"config": {"poll_interval_s": -1}}}},
        )
    assert len(stack.runs()) == runs_before

    # Mode switch from the Launchpad (here GraphQL): the running run hands over and ends green.
    switched_at = time.time()
    http_run_id = stack.launch(HTTP_CONFIG)
    assert "kalshi/shard" not in stack.run(http_run_id).tags  # or it would queue behind `first`
    stack.handed_over(first.run_id, http_run_id)
    wait_for(lambda: stack.ticks_since("http", switched_at) > 0, timeout=30, what="http ticks")
    # make before break: the old run read on after the new one's first tick
    overlap = stack.overlap_s("http", http_run_id, switched_at)
    assert overlap > 0, f"a gap of {-overlap:.1f}s"

    # Terminate: the run flushes and ends CANCELED; the sensor relaunches it with the same config.
    stack.wait_status(http_run_id, "STARTED", timeout=60)
    http_pid = stack.worker_pid(http_run_id)
    client.terminate_run(http_run_id)
    stack.wait_status(http_run_id, "CANCELED", timeout=30)
    assert stack.unloaded_bytes_of(http_pid) == 0, "the terminated run left landing bytes unloaded"
    stops = query(
        stack.db,
        "SELECT count(*) FROM feed_events WHERE source = 'engine' AND kind = 'stop' "
        "AND detail = 'dagster run terminated'",
    )[0][0]
    assert stops >= 1
    relaunched = stack.wait_sensor_run(http_run_id, timeout=60)
    assert relaunched.config_yaml == stack.run(http_run_id).config_yaml
    assert relaunched.mode == "http"

    # SIGKILL of the run worker: a new run streams within 60 s, nothing is stored twice.
    victim = stack.worker_pid(relaunched.run_id)
    os.kill(victim, signal.SIGKILL)
    killed_at = time.time()
    # the keep-alive sensor looks every 15 s; a loaded machine runs its ticks late
    stack.wait_status(relaunched.run_id, "FAILURE", timeout=90)
    replacement = stack.wait_sensor_run(relaunched.run_id, timeout=60)
    wait_for(
        lambda: stack.ticks_since("http", killed_at + 0.5) > 0,
        timeout=max(1.0, 180 - (time.time() - killed_at)),  # 60 s is the figure; printed
        what="ticks from the replacement after the kill",
    )
    assert replacement.mode == "http"  # the sensor's next relaunch keeps the new mode
    duplicates = query(
        stack.db,
        "SELECT landing_segment, landing_offset, market_ticker, count(*) FROM ticks "
        "GROUP BY ALL HAVING count(*) > 1 LIMIT 5",
    )
    assert duplicates == []
    failures = query(
        stack.db,
        "SELECT detail FROM feed_events WHERE source = 'dagster' AND kind = 'run_failed'",
    )
    wait_for(
        lambda: any(
            relaunched.run_id in d
            for (d,) in query(
                stack.db,
                "SELECT detail FROM feed_events WHERE source = 'dagster' AND kind = 'run_failed'",
            )
        ),
        timeout=60,
        what=f"the failure sensor's feed_events row (so far {failures})",
    )

    # Back to websocket: the http run hands over in turn.
    back_at = time.time()
    ws_run_id = stack.launch(WS_CONFIG)
    stack.handed_over(replacement.run_id, ws_run_id)
    # the successor stores its backlog once it holds the file, a moment after the SUCCESS
    wait_for(lambda: stack.ticks_since("websocket", back_at) > 0, timeout=30, what="ws ticks")
    overlap = stack.overlap_s("websocket", ws_run_id, back_at)
    assert overlap > 0, f"a gap of {-overlap:.1f}s"

    # raw_ticks: materializations with numeric metadata, and a passing freshness policy.
    metadata = wait_for(_numeric_metadata(stack), timeout=30, what="raw_ticks materializations")
    assert all(m["rows_stored"] >= 0 and "ticks_per_s" in m for m in metadata)
    assert any(m["rows_stored"] > 0 for m in metadata)
    assert any({"lag_p50_ms", "lag_p99_ms"} <= set(m) for m in metadata)  # the websocket run's
    node = wait_for(
        lambda: (
            (n := stack.graphql(FRESHNESS_QUERY)["assetNodeOrError"])["freshnessStatusInfo"][
                "freshnessStatus"
            ]
            == "HEALTHY"
            and n
        ),
        timeout=60,
        what="raw_ticks freshness HEALTHY",
    )
    assert node["internalFreshnessPolicy"] == {"failWindowSeconds": 600, "warnWindowSeconds": 300}

    # `kalshi-pipeline status` agrees.
    status = subprocess.run(
        [sys.executable, "-m", "kalshi_pipeline.status", "--json"],
        env={**os.environ, "DAGSTER_HOME": str(stack.home)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    report = json.loads(status.stdout)
    assert status.returncode == 0, report["reason"]
    assert report["run"]["run_id"] == ws_run_id
    assert report["run"]["mode"] == "websocket"

    # Stopping dev with Ctrl-C: sensor off, stream CANCELED and flushed, no process left behind.
    groups = stack.process_groups()
    assert len(groups) == 2  # the simulator's and dagster dev's
    for pgid in groups:
        assert not sigint_ignored(pgid), f"process {pgid} inherited SIGINT as ignored"
    stack.proc.send_signal(signal.SIGINT)
    assert stack.proc.wait(timeout=90) == 0, _tail(stack.log)
    assert group_members(groups) == []
    assert "stopped; no process left behind" in stack.log.read_text()
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(stack.home))) as instance:
        statuses = {
            r.dagster_run.run_id: r.dagster_run.status
            for r in instance.get_run_records(dg.RunsFilter(job_name="kalshi_ingest"))
        }
    assert statuses[ws_run_id] == dg.DagsterRunStatus.CANCELED
    assert statuses[first.run_id] == statuses[replacement.run_id] == dg.DagsterRunStatus.SUCCESS
    assert all(
        s.value not in ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")
        for s in statuses.values()
    ), statuses
    assert (stack.home / "kalshi-dev-stopped-sensor").exists()  # the next `dev` turns it back on
    with Warehouse(stack.db).connect(read_only=True) as con:
        last_stop = con.execute(
            "SELECT detail FROM feed_events WHERE source = 'engine' AND kind = 'stop' "
            "ORDER BY occurred_at DESC LIMIT 1"
        ).fetchone()
    assert last_stop == ("dagster run terminated",)
    elapsed = time.monotonic() - started
    print(f"e2e took {elapsed:.0f}s")
