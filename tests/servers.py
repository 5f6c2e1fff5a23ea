"""A real llama.cpp HTTP server for tests: `xllamacpp` (prebuilt llama.cpp) serving a GGUF on
127.0.0.1 with an OpenAI-compatible `/v1/chat/completions` that returns per-token logprobs.

The server runs in a child process (this file is its entry point), so a crash in native code
cannot take the test session down and stopping it is a plain SIGTERM. Use from a fixture:

    with llama_server(gguf_path) as base_url:   # "http://127.0.0.1:PORT/v1"
        ...
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def free_port() -> int:
    """A port the OS considers free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False  # not listening yet, or 503 while the model loads


@contextlib.contextmanager
def http_process(
    args: list[str], url: str, *, name: str, timeout: float, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen, IO[bytes]]]:
    """Start `args`, wait until `URL/health` answers 200, yield the process and its log (stdout
    and stderr, one file), then stop it: SIGTERM, SIGKILL after 30 s."""
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
        try:
            deadline = time.monotonic() + timeout
            while not _healthy(url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    tail = log.read().decode(errors="replace")[-2000:]
                    raise RuntimeError(f"{name} did not start:\n{tail}")
                time.sleep(0.2)
            yield proc, log
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def llama_server(
    model: Path,
    *,
    n_ctx: int = 4096,
    n_parallel: int = 4,
    threads: int = 2,
    timeout: float = 120,
) -> Iterator[str]:
    """Start the server, wait until `/health` answers, yield its OpenAI base URL, then stop it.
    `n_ctx` is shared by the `n_parallel` slots (llama.cpp splits it evenly)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [sys.executable, __file__, *map(str, (model, port, n_ctx, n_parallel, threads))]
    with http_process(args, url, name=f"llama.cpp server on port {port}", timeout=timeout):
        yield f"{url}/v1"


def _serve(model: str, port: int, n_ctx: int, n_parallel: int, threads: int) -> None:
    """Child process: serve until SIGTERM/SIGINT, then shut the server down in order."""
    import xllamacpp

    # Blocked before the server starts, so its threads inherit the mask and sigwait gets them.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    params = xllamacpp.CommonParams()
    params.model.path = model
    params.hostnames = ["127.0.0.1"]
    params.port = port
    params.n_ctx = n_ctx
    params.n_parallel = n_parallel
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    server = xllamacpp.Server(params)
    signal.sigwait(stop_signals)
    del server  # the destructor stops the HTTP loop and frees the model


if __name__ == "__main__":
    path, port, n_ctx, n_parallel, threads = sys.argv[1:6]
    _serve(path, int(port), int(n_ctx), int(n_parallel), int(threads))
