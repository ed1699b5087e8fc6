"""Child processes of a benchmark: started, watched with psutil, and always cleaned up.

Every process a scenario starts is registered with `Reaper`; `Reaper.cleanup()` (called from
`finally` blocks and at exit, so also on Ctrl-C) stops whatever is still running, by pid, with
SIGTERM and then SIGKILL. Children run in their own sessions so a terminal Ctrl-C reaches only the
benchmark, which then stops them in order.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import psutil

MB = 1024 * 1024


class BenchError(RuntimeError):
    """A benchmark step failed; the message says which and shows the child's stderr."""


class Reaper:
    """The live child processes of this benchmark run."""

    _procs: dict[int, subprocess.Popen[Any]] = {}
    _lock = threading.Lock()

    @classmethod
    def add(cls, proc: subprocess.Popen[Any]) -> None:
        with cls._lock:
            cls._procs[proc.pid] = proc

    @classmethod
    def discard(cls, proc: subprocess.Popen[Any]) -> None:
        with cls._lock:
            cls._procs.pop(proc.pid, None)

    @classmethod
    def cleanup(cls) -> None:
        with cls._lock:
            procs = list(cls._procs.values())
            cls._procs.clear()
        for proc in procs:
            terminate(proc, timeout_s=5.0)


atexit.register(Reaper.cleanup)


def terminate(proc: subprocess.Popen[Any], timeout_s: float = 10.0) -> int | None:
    """SIGTERM the child (its whole session), wait, then SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    Reaper.discard(proc)
    return proc.returncode


def child_env(kalshi_home: Path) -> dict[str, str]:
    """The environment of every child: the benchmark's own dev key, nothing from the user's."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KALSHI_", "WEBSOCKET_", "USE_WEBSOCKET"))
    }
    env["KALSHI_HOME"] = str(kalshi_home)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def spawn(
    args: Sequence[str],
    env: dict[str, str],
    *,
    stdout: int | IO[Any] | None = subprocess.PIPE,
    stderr_path: Path | None = None,
) -> subprocess.Popen[str]:
    err: Any = subprocess.DEVNULL
    if stderr_path is not None:
        err = stderr_path.open("ab")
    try:
        proc = subprocess.Popen(
            list(args),
            stdout=stdout,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=env,
            text=True,
            start_new_session=True,
        )
    finally:
        if stderr_path is not None:
            err.close()
    Reaper.add(proc)
    return proc


def tail(path: Path | None, lines: int = 30) -> str:
    if path is None or not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def run_child(
    module: str, args: Sequence[str], env: dict[str, str], timeout_s: float, log: Path
) -> dict[str, Any]:
    """Run `python -m module args`, bounded in time; its last stdout line is a JSON result."""
    proc = spawn([sys.executable, "-m", module, *args], env, stderr_path=log)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        terminate(proc)
        raise BenchError(
            f"{module} ran longer than {timeout_s:.0f}s; stderr:\n{tail(log)}"
        ) from None
    finally:
        Reaper.discard(proc)
    if proc.returncode != 0:
        raise BenchError(f"{module} exited with {proc.returncode}; stderr:\n{tail(log)}")
    lines = [line for line in out.splitlines() if line.strip()]
    if not lines:
        raise BenchError(f"{module} printed no result; stderr:\n{tail(log)}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


class Sampler:
    """Samples a process's RSS and CPU time (all threads) every `every_s`, in a thread, with
    those of its child processes: the engine stores through one (`stream/store.py`), and its
    figures are the two together (RSS summed, so the libraries both map count twice)."""

    def __init__(self, pid: int, every_s: float = 0.1) -> None:
        self.process = psutil.Process(pid)
        self.every_s = every_s
        self.samples: list[tuple[float, int, float]] = []  # (monotonic, rss, cpu seconds)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every_s)

    def sample(self) -> tuple[float, int, float] | None:
        try:
            with self._lock:
                rss, cpu = _usage(self.process)
                for child in self.process.children(recursive=True):
                    with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess):
                        child_rss, child_cpu = _usage(child)
                        rss, cpu = rss + child_rss, cpu + child_cpu
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            return None
        s = (time.monotonic(), rss, cpu)
        self.samples.append(s)
        return s

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def peak_rss_mb(self, since: float = 0.0, until: float = float("inf")) -> float | None:
        values = [rss for t, rss, _ in self.samples if since <= t <= until]
        return round(max(values) / MB, 1) if values else None

    def last_rss_mb(self) -> float | None:
        return round(self.samples[-1][1] / MB, 1) if self.samples else None


def _usage(process: psutil.Process) -> tuple[int, float]:
    """RSS in bytes and CPU seconds (user and system, all threads) of `process`."""
    with process.oneshot():
        t = process.cpu_times()
        return process.memory_info().rss, t.user + t.system


class EngineProcess:
    """`kalshi_pipeline.bench.runner` in a child process, its status lines and its resources."""

    def __init__(
        self,
        spec: dict[str, Any],
        env: dict[str, str],
        log: Path,
        *,
        sample_every_s: float = 0.1,
        profile: Path | None = None,
        profile_at_start: bool = True,
    ) -> None:
        self.spec = spec
        self.env = env
        self.log = log
        self.sample_every_s = sample_every_s
        self.profile = profile
        self.profile_at_start = profile_at_start
        self.status: dict[str, Any] = {}
        self.target: dict[str, Any] | None = None
        self.stopped: dict[str, Any] | None = None
        self.started_ns: int | None = None
        self.proc: subprocess.Popen[str] | None = None
        self.sampler: Sampler | None = None
        self._profiler: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._changed = threading.Condition()

    def start(self) -> EngineProcess:
        args = [sys.executable, "-m", "kalshi_pipeline.bench.runner", json.dumps(self.spec)]
        self.proc = spawn(args, self.env, stderr_path=self.log)
        self.sampler = Sampler(self.proc.pid, self.sample_every_s)
        self._reader = threading.Thread(target=self._read, name="bench-engine-out", daemon=True)
        self._reader.start()
        if self.profile_at_start:
            self.profile_now()
        return self

    def profile_now(self) -> None:
        """Start recording the py-spy profile (if one was asked for) from this moment."""
        if self.profile is not None and self._profiler is None and self.proc is not None:
            self._profiler = start_profiler(self.proc.pid, self.profile, self.env)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            with self._changed:
                kind = msg.get("event")
                if kind == "started":
                    self.started_ns = msg["t_ns"]
                elif kind == "target":
                    self.target = msg
                    self.status = msg
                elif kind == "stopped":
                    self.stopped = msg
                    self.status = msg
                else:
                    self.status = msg
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_for(
        self,
        condition: Callable[[EngineProcess], bool],
        timeout_s: float,
        what: str,
        *,
        on_wait: Callable[[EngineProcess], None] | None = None,
        required: bool = True,
    ) -> bool:
        """Wait until `condition(self)`; False (or BenchError if `required`) after the timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            if condition(self):
                return True
            if not self.alive():
                raise BenchError(f"the engine exited while waiting for {what}:\n{tail(self.log)}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if required:
                    hint = ""
                    if self.status.get("last_event") == "websocket subscribe_failed":
                        hint = (
                            " The engine could not subscribe: if the simulator sends the firehose "
                            "before it answers every channel of the subscribe command, the "
                            "client's frame queue fills before the second `subscribed` arrives."
                        )
                    raise BenchError(
                        f"timed out after {timeout_s:.0f}s waiting for {what} "
                        f"(last status {self.status}).{hint} stderr:\n{tail(self.log)}"
                    )
                return False
            with self._changed:
                self._changed.wait(min(0.25, remaining))
            if on_wait is not None:
                on_wait(self)

    def stop(self, timeout_s: float = 20.0) -> dict[str, Any] | None:
        """SIGTERM: the engine stops reading, flushes and prints its last status."""
        if self.proc is None:
            return None
        terminate(self.proc, timeout_s)
        self._finish()
        return self.stopped

    def kill(self) -> None:
        """SIGKILL, as the chaos benchmark does: no flush, no goodbye."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        Reaper.discard(self.proc)
        self._finish()

    def _finish(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()
        if self._reader is not None:
            self._reader.join(timeout=5)
        if self._profiler is not None:
            stop_profiler(self._profiler)
            self._profiler = None
            if self.profile is not None and self.profile.exists():
                from kalshi_pipeline.bench.profile import summarize

                summary = self.profile.with_suffix(".summary.txt")
                summary.write_text(summarize(self.profile, top=40) + "\n")


def start_profiler(pid: int, out: Path, env: dict[str, str]) -> subprocess.Popen[str] | None:
    """py-spy attached to `pid` and its children, all threads, raw collapsed stacks; None when
    py-spy is absent."""
    exe = Path(sys.executable).with_name("py-spy")
    if not exe.exists():
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    args = [str(exe), "record", "--pid", str(pid), "--format", "raw", "--rate", "200", "--threads"]
    args += ["--subprocesses"]  # the engine's store process too
    args += ["--output", str(out), "--nonblocking"]
    return spawn(args, env, stdout=subprocess.DEVNULL, stderr_path=out.with_suffix(".log"))


def stop_profiler(proc: subprocess.Popen[str]) -> None:
    """py-spy writes its file when its target exits or on SIGINT."""
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
    terminate(proc, timeout_s=2)
