"""`kalshi-pipeline dev` (what `make run` starts): the simulator and `dagster dev`, stopped cleanly.

Start: DAGSTER_HOME (default ./.dagster) is created and the project's dagster.yaml copied in when
missing or older; unless KALSHI_ENV is demo or prod the simulator listens on 127.0.0.1:8700
(`--sim-port`) and KALSHI_REST_URL / KALSHI_WS_URL point at it; then `dagster dev` serves the UI
on 127.0.0.1:3000 (`--port`). The keep-alive sensor is RUNNING by default, so the stream begins
on its own. Each child runs in its own process group with SIGINT at its default: a `dagster dev`
started from a background job would otherwise inherit SIGINT as ignored and, since Dagster maps
SIGTERM onto the SIGINT handler, ignore SIGTERM too.

While up: when the code location's server dies (killed with a run worker's process tree, say),
`dagster dev` does not restart it, and without it no sensor runs; `dev` notices within
`LOCATION_CHECK_EVERY_S` and reloads the location, so the keep-alive sensor can replace the dead
run.

Stop (Ctrl-C or SIGTERM), in the order that leaves nothing behind:
1. the keep-alive sensor is turned off (GraphQL `stopSensor`), so it relaunches nothing; a marker
   in DAGSTER_HOME says so, and the next `dev` turns it back on (a sensor the operator turned off
   in the UI stays off);
2. the stream runs are terminated and awaited until CANCELED (each flushes into DuckDB);
3. `dagster dev` is stopped (webserver, daemon, code server and run workers, all of its process
   group), then the simulator;
4. no process of those groups may remain: stragglers get SIGKILL, and the output says so.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests

from kalshi_pipeline.defs.ingest import runs
from kalshi_pipeline.dev_output import pump
from kalshi_pipeline.warehouse.paths import DatabasePathError, check_database_path

PROJECT_DIR = Path(__file__).resolve().parents[1]
DEFAULT_DAGSTER_HOME = Path(".dagster")
SENSOR_MARKER = "kalshi-dev-stopped-sensor"
EXAMPLE_QUERY = '"SELECT source, count(*) FROM ticks GROUP BY 1"'
# Reset SIGINT to its default, then become the real program (see the module docstring).
LOCATION_CHECK_EVERY_S = 10.0
LOCATION_RETRY_S = 60.0  # after a reload that failed (broken code, say): no faster than this
LOCATION_QUERY = """
query Location {
  workspaceOrError {
    ... on Workspace {
      locationEntries { name locationOrLoadError { __typename ... on PythonError { message } } }
    }
  }
}
"""
RELOAD_LOCATION = """
mutation Reload($name: String!) {
  reloadRepositoryLocation(repositoryLocationName: $name) {
    __typename
    ... on WorkspaceLocationEntry {
      locationOrLoadError { __typename ... on PythonError { message } }
    }
    ... on PythonError { message }
  }
}
"""
EXEC_WITH_DEFAULT_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)

SENSOR_QUERY = """
query Sensor($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { id name sensorState { status } }
    ... on PythonError { message }
  }
}
"""
STOP_SENSOR = """
mutation Stop($id: String!) {
  stopSensor(id: $id) {
    __typename
    ... on StopSensorMutationResult { instigationState { status } }
    ... on PythonError { message }
  }
}
"""
RESET_SENSOR = """
mutation Reset($selector: SensorSelector!) {
  resetSensor(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status } }
    ... on PythonError { message }
  }
}
"""


class DevError(RuntimeError):
    """The stack could not start; the message says what to do."""


def command_prefix() -> str:
    """How to call `kalshi-pipeline` from this terminal: by name when it is on PATH (an
    activated virtual environment), else by its path in the virtual environment."""
    here = Path(sys.executable).with_name("kalshi-pipeline")
    found = shutil.which("kalshi-pipeline")
    if found and Path(found).resolve() == here.resolve():
        return "kalshi-pipeline"
    try:
        return str(here.relative_to(Path.cwd()))
    except ValueError:
        return str(here)


def say(message: str) -> None:
    print(f"[kalshi-pipeline dev] {message}", file=sys.stderr, flush=True)


def install_dagster_yaml(home: Path, source: Path) -> bool:
    """Copy the project's dagster.yaml into `home` when missing or older. True if copied."""
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if target.exists() and target.stat().st_mtime >= source.stat().st_mtime:
        return False
    tmp = target.with_name("dagster.yaml.tmp")
    shutil.copy2(source, tmp)
    os.replace(tmp, target)
    return True


def _group_members(pgid: int) -> list[Any]:
    import psutil

    members = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if os.getpgid(proc.pid) == pgid:
                members.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def _describe(proc: Any) -> str:
    try:
        cmd = " ".join(proc.cmdline())[:120]
    except Exception:
        cmd = "?"
    return f"pid {proc.pid} ({cmd})"


class DevServer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.host: str = args.host
        self.port: int = args.port
        self.url = f"http://{self.host}:{self.port}"
        self.home = Path(
            args.dagster_home or os.environ.get("DAGSTER_HOME") or DEFAULT_DAGSTER_HOME
        )
        self.home = self.home.expanduser().resolve()
        self.stop_requested = threading.Event()
        self.signals = 0
        self.dagster: subprocess.Popen[bytes] | None = None
        self.sim: Any = None
        self.groups: list[int] = []
        self._instance: Any = None

    # ------------------------------------------------------------------ signals

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.signals += 1
        if self.signals == 1:
            say(f"{signal.Signals(signum).name}: stopping everything (this takes a few seconds)")
        else:
            say("still stopping: the stream is flushing; stragglers get SIGKILL at the end")
        self.stop_requested.set()

    def install_signal_handlers(self) -> None:
        # Installed before any child starts: a handled signal is reset to its default in a child
        # at exec, while an ignored one would stay ignored.
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    # ------------------------------------------------------------------ start

    def prepare_environment(self) -> None:
        dagster_yaml = PROJECT_DIR / "dagster.yaml"
        if not dagster_yaml.exists():
            raise DevError(f"{dagster_yaml} is missing: run `kalshi-pipeline dev` from a checkout")
        if install_dagster_yaml(self.home, dagster_yaml):
            say(f"installed {dagster_yaml} into {self.home}")
        os.environ["DAGSTER_HOME"] = str(self.home)
        # Absolute paths: the code server and run workers must agree with this process.
        database = Path(os.environ.get("KALSHI_DUCKDB_PATH") or "data/kalshi.duckdb")
        try:
            check_database_path(database)
        except DatabasePathError as exc:
            raise DevError(str(exc)) from None
        os.environ["KALSHI_DUCKDB_PATH"] = str(database.expanduser().resolve())
        kalshi_home = Path(os.environ.get("KALSHI_HOME") or ".kalshi")
        os.environ["KALSHI_HOME"] = str(kalshi_home.expanduser().resolve())

    def wants_simulator(self) -> bool:
        env = (os.environ.get("KALSHI_ENV") or "local").strip().lower()
        return env not in ("demo", "prod") and not self.args.no_simulator

    def start_simulator(self) -> None:
        from kalshi_pipeline.simulator.process import SimulatorProcess, SimulatorStartError

        extra = ["--host", "127.0.0.1", "--port", str(self.args.sim_port)]
        if self.args.sim_markets is not None:
            extra += ["--markets", str(self.args.sim_markets)]
        if self.args.sim_rate is not None:
            extra += ["--rate", str(self.args.sim_rate)]
        self.sim = SimulatorProcess(kalshi_home=os.environ["KALSHI_HOME"], extra_args=extra)
        try:
            self.sim.start()
        except SimulatorStartError as exc:
            raise DevError(
                f"the simulator did not start on 127.0.0.1:{self.args.sim_port} (another one "
                f"running? choose --sim-port): {exc}"
            ) from None
        self.groups.append(self.sim.proc.pid)
        os.environ["KALSHI_ENV"] = "local"
        os.environ["KALSHI_REST_URL"] = self.sim.rest_url
        os.environ["KALSHI_WS_URL"] = self.sim.ws_url

    def start_dagster(self) -> None:
        workspace = PROJECT_DIR / "workspace.yaml"
        cmd = [
            sys.executable,
            "-c",
            EXEC_WITH_DEFAULT_SIGINT,
            sys.executable,
            "-m",
            "dagster",
            "dev",
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-w",
            str(workspace),
        ]
        env = dict(os.environ)
        # `dagster dev` warns that `dg dev` supersedes it; this project runs `dagster dev` on
        # purpose (workspace.yaml), so the warning would only alarm.
        quiet = "ignore:Function `dev_command` is superseded"
        env["PYTHONWARNINGS"] = ",".join(w for w in (env.get("PYTHONWARNINGS"), quiet) if w)
        # A run's step output reaches this terminal through a `tail -F` of its captured log,
        # which Dagster stops as soon as the step ends; tail looks once a second, so a failed
        # step's last lines (its STEP_FAILURE and the reason) could be cut. Dagster waits this
        # long before stopping it (dagster-io/dagster#23336).
        env.setdefault("DAGSTER_COMPUTE_LOG_TAIL_WAIT_AFTER_FINISH", "1.5")
        self.dagster = subprocess.Popen(
            cmd,
            cwd=PROJECT_DIR,
            env=env,
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        # Through a filter that folds stack traces of normal operation (a run taken over or
        # stopped) into one line each; see dev_output.py.
        assert self.dagster.stdout is not None and self.dagster.stderr is not None
        pump(self.dagster.stdout, sys.stdout.buffer)
        pump(self.dagster.stderr, sys.stderr.buffer)
        self.groups.append(self.dagster.pid)

    def _graphql(self, query: str, variables: dict[str, Any], timeout: float = 10.0) -> Any:
        resp = requests.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=timeout
        )
        resp.raise_for_status()
        body = resp.json()
        if body.get("errors"):
            raise DevError(f"GraphQL error: {body['errors']}")
        return body["data"]

    @property
    def sensor_selector(self) -> dict[str, str]:
        return {
            "repositoryLocationName": runs.LOCATION_NAME,
            "repositoryName": runs.REPOSITORY_NAME,
            "sensorName": runs.SENSOR_NAME,
        }

    def _sensor(self) -> dict[str, Any] | None:
        data = self._graphql(SENSOR_QUERY, {"selector": self.sensor_selector})["sensorOrError"]
        return data if data.get("__typename") == "Sensor" else None

    def wait_until_ready(self, timeout_s: float = 180.0) -> dict[str, Any]:
        """Until the UI answers and the code location (with its sensor) is loaded."""
        assert self.dagster is not None
        deadline = time.monotonic() + timeout_s
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self.stop_requested.is_set():
                raise DevError("stopped while starting")
            if self.dagster.poll() is not None:
                raise DevError(
                    f"dagster dev exited with status {self.dagster.returncode} while starting "
                    f"(is port {self.port} free? choose --port)"
                )
            try:
                sensor = self._sensor()
                if sensor is not None:
                    return sensor
                last = "code location not loaded yet"
            except (requests.RequestException, DevError, ValueError) as exc:
                last = str(exc)
            self.stop_requested.wait(1.0)
        raise DevError(f"dagster dev did not become ready within {timeout_s:.0f}s ({last})")

    def resume_sensor(self, sensor: dict[str, Any]) -> None:
        marker = self.home / SENSOR_MARKER
        status = (sensor.get("sensorState") or {}).get("status")
        if marker.exists():
            data = self._graphql(RESET_SENSOR, {"selector": self.sensor_selector})["resetSensor"]
            if data.get("__typename") != "Sensor":
                say(f"could not turn {runs.SENSOR_NAME} back on: {data.get('message')}")
                return
            marker.unlink(missing_ok=True)
            say(f"{runs.SENSOR_NAME} turned back on (the last `dev` turned it off when stopping)")
        elif status == "STOPPED":
            say(
                f"NOTE: {runs.SENSOR_NAME} is off (turned off in the UI), so nothing streams; "
                f"turn it on at {self.url}/automation to start the stream"
            )

    def banner(self) -> None:
        db = os.environ["KALSHI_DUCKDB_PATH"]
        lines = [
            "kalshi_pipeline is up",
            f"  Dagster UI     {self.url}   (job {runs.JOB_NAME}, sensor {runs.SENSOR_NAME}, "
            f"asset {runs.ASSET_KEY})",
        ]
        if self.sim is not None:
            lines.append(f"  simulator      {self.sim.rest_url}  and  {self.sim.ws_url}")
        else:
            env = os.environ.get("KALSHI_ENV") or "local"
            lines.append(f"  Kalshi         environment {env} (no simulator started)")
        cli = command_prefix()
        lines += [
            f"  DuckDB         {db}   (the stream owns it; query it only through {cli})",
            f"  query          {cli} sql " + EXAMPLE_QUERY,
            f"  long sessions  {cli} shell   (a DuckDB shell on the live data)",
            f"  health         {cli} status   (add --json for scripts)",
            f"  DAGSTER_HOME   {self.home}",
            "  switch mode    Launchpad of kalshi_ingest: resources: {kalshi_feed: {config: "
            "{mode: http}}}",
            "  operators      docs/operating.md explains every status line and feed event",
            "  expected       dagster's warning about dagster.yaml in this folder: it is copied "
            "into DAGSTER_HOME, which is what Dagster reads",
            "  Ctrl-C stops everything: sensor off, stream flushed, processes checked.",
        ]
        print("\n".join(lines), file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ run

    def supervise(self) -> str | None:
        """Wait for a stop request; return why we stop when a child died instead."""
        assert self.dagster is not None
        next_location_check = time.monotonic() + LOCATION_CHECK_EVERY_S
        while not self.stop_requested.wait(1.0):
            if self.dagster.poll() is not None:
                return f"dagster dev exited on its own (status {self.dagster.returncode})"
            if self.sim is not None and not self.sim.alive():
                tail = self.sim.stderr_tail()[-2000:]
                return f"the simulator exited on its own:\n{tail}"
            if time.monotonic() >= next_location_check:
                healthy = self.revive_location()
                wait = LOCATION_CHECK_EVERY_S if healthy else LOCATION_RETRY_S
                next_location_check = time.monotonic() + wait
        return None

    def revive_location(self) -> bool:
        """Reload the code location when its server is gone (or broken); say what happened.
        False when it is still down."""
        try:
            workspace = self._graphql(LOCATION_QUERY, {})["workspaceOrError"]
            entries = {e["name"]: e for e in workspace.get("locationEntries") or []}
            loaded = (entries.get(runs.LOCATION_NAME) or {}).get("locationOrLoadError") or {}
            if loaded.get("__typename") != "PythonError":
                return True
            say(
                f"code location {runs.LOCATION_NAME} is down ({loaded.get('message', '')[:200]}); "
                "reloading it so the keep-alive sensor runs again"
            )
            data = self._graphql(RELOAD_LOCATION, {"name": runs.LOCATION_NAME}, timeout=60.0)[
                "reloadRepositoryLocation"
            ]
        except (requests.RequestException, DevError, ValueError, KeyError) as exc:
            say(f"could not check or reload code location {runs.LOCATION_NAME}: {exc}")
            return True  # the webserver did not answer this time: ask again soon
        error = (data.get("locationOrLoadError") or {}).get("message") or data.get("message")
        if error:
            say(f"reloading {runs.LOCATION_NAME} failed (tried again in 60 s): {error[:300]}")
            return False
        say(f"code location {runs.LOCATION_NAME} reloaded")
        return True

    # ------------------------------------------------------------------ stop

    def instance(self) -> Any:
        if self._instance is None:
            import dagster as dg

            self._instance = dg.DagsterInstance.get()
        return self._instance

    def stop_sensor(self) -> bool:
        try:
            sensor = self._sensor()
            if sensor is None:
                say(f"{runs.SENSOR_NAME} not found; cannot turn it off")
                return False
            status = (sensor.get("sensorState") or {}).get("status")
            if status == "STOPPED":
                return True  # the operator turned it off: no marker, it stays off next time
            data = self._graphql(STOP_SENSOR, {"id": sensor["id"]})["stopSensor"]
            if data.get("__typename") != "StopSensorMutationResult":
                say(f"stopSensor failed: {data.get('message')}")
                return False
        except (requests.RequestException, DevError, ValueError) as exc:
            say(f"could not turn {runs.SENSOR_NAME} off through GraphQL: {exc}")
            return False
        (self.home / SENSOR_MARKER).write_text(
            "kalshi-pipeline dev turned the keep-alive sensor off while stopping; "
            "the next `kalshi-pipeline dev` turns it back on.\n"
        )
        say(f"{runs.SENSOR_NAME} turned off")
        return True

    def _unfinished_runs(self) -> list[Any]:
        import dagster as dg

        return [
            r.dagster_run
            for r in self.instance().get_run_records(
                dg.RunsFilter(job_name=runs.JOB_NAME, statuses=runs.unfinished())
            )
        ]

    def terminate_runs(self, timeout_s: float = 45.0) -> list[Any]:
        """Terminate unfinished stream runs and wait until they end; the ones left over."""
        instance = self.instance()
        deadline = time.monotonic() + timeout_s
        asked: set[str] = set()
        while time.monotonic() < deadline:
            pending = self._unfinished_runs()
            if not pending:
                if asked:
                    say(f"stream runs ended: {', '.join(sorted(asked))}")
                return []
            for run in pending:
                if run.run_id in asked:
                    continue
                asked.add(run.run_id)
                say(f"terminating run {run.run_id} ({run.status.value}); it flushes to DuckDB")
                try:
                    instance.run_coordinator.cancel_run(run.run_id)
                except Exception as exc:
                    say(f"terminating {run.run_id} failed: {exc}")
            time.sleep(0.5)
        return self._unfinished_runs()

    def _stop_group(self, pgid: int, proc: Any, timeout_s: float) -> None:
        """Ask the group leader to stop, then the group; SIGKILL only past the timeout."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pgid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            leader_done = proc is None or proc.poll() is not None
            if leader_done and not _group_members(pgid):
                return
            if leader_done:
                try:
                    os.killpg(pgid, signal.SIGTERM)
                except ProcessLookupError:
                    return
            time.sleep(0.2)

    def reap(self) -> list[str]:
        """SIGKILL whatever is left of our process groups; describe each."""
        killed = []
        for pgid in self.groups:
            for proc in _group_members(pgid):
                killed.append(_describe(proc))
                with contextlib.suppress(Exception):
                    proc.kill()
        if killed:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and any(_group_members(g) for g in self.groups):
                time.sleep(0.1)
        return killed

    def shutdown(self) -> int:
        problems = []
        if self.dagster is not None and self.dagster.poll() is None:
            self.stop_sensor()
        if self.dagster is not None:
            try:
                left = self.terminate_runs()
            except Exception as exc:
                left = []
                problems.append(f"could not read or terminate runs: {exc}")
            if left:
                problems.append(
                    "runs still unfinished after 45s: " + ", ".join(r.run_id for r in left)
                )
            say("stopping dagster dev (webserver, daemon, code server)")
            self._stop_group(self.dagster.pid, self.dagster, timeout_s=30)
        if self.sim is not None:
            say("stopping the simulator")
            self.sim.stop(timeout_s=10)
        killed = self.reap()
        if killed:
            problems.append("killed leftover processes with SIGKILL: " + "; ".join(killed))
        if self.dagster is not None:
            try:
                for run in self._unfinished_runs():
                    self.instance().report_run_failed(
                        run, "kalshi-pipeline dev: its processes were gone after stopping"
                    )
                    problems.append(f"run {run.run_id} never ended; marked failed")
            except Exception as exc:
                problems.append(f"could not check the runs after stopping: {exc}")
        if self._instance is not None:
            self._instance.dispose()
        for problem in problems:
            say(f"PROBLEM: {problem}")
        if not problems:
            say("stopped; no process left behind")
        return 1 if problems else 0

    # ------------------------------------------------------------------ main

    def run(self) -> int:
        self.install_signal_handlers()
        failure: str | None = None
        try:
            self.prepare_environment()
            if self.wants_simulator():
                self.start_simulator()
            self.start_dagster()
            sensor = self.wait_until_ready()
            self.resume_sensor(sensor)
            self.banner()
            failure = self.supervise()
        except DevError as exc:
            if not self.stop_requested.is_set():
                failure = str(exc)
        except Exception as exc:
            failure = f"{type(exc).__name__}: {exc}"
        if failure:
            say(f"ERROR: {failure}")
        status = self.shutdown()
        return 1 if failure else status


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="UI address (default %(default)s)")
    parser.add_argument("--port", type=int, default=3000, help="UI port (default %(default)s)")
    parser.add_argument(
        "--sim-port",
        type=int,
        default=8700,
        help="simulator port (default %(default)s; 0 = any free port)",
    )
    parser.add_argument("--sim-markets", type=int, default=None, help="simulated markets")
    parser.add_argument("--sim-rate", type=float, default=None, help="simulated ticks per second")
    parser.add_argument(
        "--no-simulator",
        action="store_true",
        help="do not start the simulator (KALSHI_REST_URL / KALSHI_WS_URL say where to connect)",
    )
    parser.add_argument(
        "--dagster-home",
        type=Path,
        default=None,
        help="Dagster instance folder (default $DAGSTER_HOME, else ./.dagster)",
    )


def main_from_args(args: argparse.Namespace) -> int:
    return DevServer(args).run()


def main(argv: list[str] | None = None) -> int:
    from dotenv import load_dotenv

    load_dotenv(Path.cwd() / ".env", override=False)
    parser = argparse.ArgumentParser(
        prog="kalshi-pipeline dev",
        description="Run the simulator and Dagster (UI, daemon, stream) until Ctrl-C.",
    )
    add_arguments(parser)
    return main_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
