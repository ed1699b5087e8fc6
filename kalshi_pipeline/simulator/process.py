"""Run the simulator as a child process (tests, benchmarks, `kalshi-pipeline dev`).

    with SimulatorProcess(markets=3000, seed=7, kalshi_home=tmp) as sim:
        requests.get(f"{sim.rest_url}/markets")
        sim.set_faults(http_429_s=2)

The child runs in its own process group and is stopped with SIGTERM (then SIGKILL) on exit. Its
stdout and stderr are drained continuously; the last lines are kept for error messages.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from kalshi_pipeline.kalshi.devkey import DevKey, ensure_dev_key, kalshi_home

LISTENING_RE = re.compile(
    r"^kalshi simulator listening on http://(?P<host>\[[^\]]+\]|[^:/\s]+):(?P<port>\d+) "
)
TAIL_LINES = 200


class SimulatorStartError(RuntimeError):
    """The simulator did not start; the message carries its exit status and stderr tail."""


class SimulatorProcess:
    def __init__(
        self,
        *,
        markets: int | None = None,
        rate: float | None = None,
        seed: int | None = None,
        ledger: str | os.PathLike[str] | None = None,
        book_ledger: str | os.PathLike[str] | None = None,
        firehose: int | None = None,
        book_firehose: int | None = None,
        market_lifetime: str | None = None,
        kalshi_home: str | os.PathLike[str] | None = None,
        register_keys: Iterable[tuple[str, str | os.PathLike[str]]] = (),
        ping_interval_s: float | None = None,
        rest_tokens_per_s: float | None = None,
        extra_args: Sequence[str] = (),
        start_timeout_s: float = 30.0,
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        self.ledger_path = Path(ledger) if ledger is not None else None
        self.book_ledger_path = (
            Path(book_ledger)
            if book_ledger is not None
            else self.ledger_path.with_name(self.ledger_path.stem + ".books.jsonl")
            if self.ledger_path is not None
            else None
        )
        """Where the simulator writes its book ledger (by default beside the ticker ledger)."""
        self.kalshi_home = Path(kalshi_home) if kalshi_home is not None else None
        self.start_timeout_s = start_timeout_s
        self.env = env
        self.cwd = cwd
        args = ["--port", "0"]
        for flag, value in (
            ("--markets", markets),
            ("--rate", rate),
            ("--seed", seed),
            ("--ledger", self.ledger_path),
            ("--book-ledger", Path(book_ledger) if book_ledger is not None else None),
            ("--firehose", firehose),
            ("--book-firehose", book_firehose),
            ("--market-lifetime", market_lifetime),
            ("--kalshi-home", self.kalshi_home),
            ("--ping-interval-s", ping_interval_s),
            ("--rest-tokens-per-s", rest_tokens_per_s),
        ):
            if value is not None:
                args += [flag, str(value)]
        for key_id, path in register_keys:
            args += ["--register-key", f"{key_id}={path}"]
        self.args = [*args, *extra_args]
        self.proc: subprocess.Popen[str] | None = None
        self.host = "127.0.0.1"
        self.port = 0
        self._stdout: deque[str] = deque(maxlen=TAIL_LINES)
        self._stderr: deque[str] = deque(maxlen=TAIL_LINES)
        self._ready = threading.Event()
        self._threads: list[threading.Thread] = []

    # URLs.

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def rest_url(self) -> str:
        return f"{self.base_url}/trade-api/v2"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/trade-api/ws/v2"

    @property
    def dev_key(self) -> DevKey:
        """The key pair the simulator registered (made by it at start if it was missing)."""
        return ensure_dev_key(self.kalshi_home or kalshi_home())

    # Life cycle.

    def start(self) -> SimulatorProcess:
        cmd = [sys.executable, "-m", "kalshi_pipeline.simulator", *self.args]
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=self.cwd,
            start_new_session=True,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._threads = [
            threading.Thread(target=self._drain, args=(self.proc.stdout, True), daemon=True),
            threading.Thread(target=self._drain, args=(self.proc.stderr, False), daemon=True),
        ]
        for t in self._threads:
            t.start()
        deadline = time.monotonic() + self.start_timeout_s
        while not self._ready.wait(0.05):
            if self.proc.poll() is not None:
                for t in self._threads:
                    t.join(timeout=2)
                raise SimulatorStartError(
                    f"simulator exited with status {self.proc.returncode} before listening "
                    f"({' '.join(cmd)}); stderr:\n{self.stderr_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise SimulatorStartError(
                    f"simulator did not report its port within {self.start_timeout_s} s; "
                    f"stderr:\n{self.stderr_tail()}"
                )
        return self

    def _drain(self, stream: IO[str], is_stdout: bool) -> None:
        target = self._stdout if is_stdout else self._stderr
        for line in stream:
            line = line.rstrip("\n")
            target.append(line)
            if is_stdout and not self._ready.is_set():
                match = LISTENING_RE.match(line)
                if match:
                    self.host = match.group("host").strip("[]")
                    self.port = int(match.group("port"))
                    self._ready.set()

    def stderr_tail(self) -> str:
        return "\n".join(self._stderr)

    def stdout_tail(self) -> str:
        return "\n".join(self._stdout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, wait up to `timeout_s`, then SIGKILL the whole process group."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                proc.wait(timeout=5)
        for t in self._threads:
            t.join(timeout=2)
        return proc.returncode

    def kill(self) -> None:
        if self.alive():
            self._signal(signal.SIGKILL)
            assert self.proc is not None
            self.proc.wait(timeout=5)

    def _signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def __enter__(self) -> SimulatorProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # Control endpoint.

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(  # noqa: S310 (our own loopback http URL)
            f"{self.base_url}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"} if data is not None else {},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise RuntimeError(f"{method} {path} -> {exc.code}: {detail}") from None

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        """Replace the fault state (keys left out are off); returns the resulting state."""
        result: dict[str, Any] = self._call("POST", "/_sim/faults", faults)
        return result

    def clear_faults(self) -> dict[str, Any]:
        return self.set_faults()

    def faults(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/_sim/faults")
        return result

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/_sim/stats")
        return result

    def sessions(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/_sim/sessions")
        return result

    def read_ledger(self) -> list[dict[str, Any]]:
        """Every complete ticker-ledger line written so far."""
        return _read_lines(self.ledger_path)

    def read_book_ledger(self) -> list[dict[str, Any]]:
        """Every complete book-ledger line written so far (order-book changes, trades, snapshots
        sent, faulted frames)."""
        return _read_lines(self.book_ledger_path)


def _read_lines(path: Path | None) -> list[dict[str, Any]]:
    if path is None:
        raise RuntimeError("this simulator was started without a ledger")
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n")
    if end < 0:
        return []
    return [json.loads(line) for line in data[: end + 1].splitlines()]
