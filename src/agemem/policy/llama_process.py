"""The child process of `LlamaCppPolicy`: one `xllamacpp.Server` (prebuilt llama.cpp) serving a
GGUF, and optionally a GGUF LoRA adapter, on 127.0.0.1 until SIGTERM.

Run as a script (`python llama_process.py '<json settings>'`), so that it imports neither torch
nor agemem: a start costs the interpreter, xllamacpp and the model load (0.7 s on 2 busy cores)
and a crash in native code cannot take the trainer down. Settings (all required): model, lora
(a path or null), port, n_parallel, n_ctx (per slot), threads, parent (the starting process's
pid).

Choices: the context is split evenly between the slots (`kv_unified` off), so each request gets
exactly `n_ctx` tokens whatever the others hold; one HTTP thread per slot plus two, so every slot
can be busy at once (llama.cpp's default of 8 HTTP threads would cap 16 slots at 8 requests); no
warm-up decode and no memory fitting (CPU only: nothing to fit), which shortens a restart.
The host-memory prompt cache (idle slots' KV, reused when a later prompt shares their prefix) is
capped at `CACHE_RAM_MIB`: llama.cpp's default of 8 GiB per server let two evaluations and a
trainer beside them exhaust 24 GB (the kernel killed a server). 1 GiB holds about 45,000 tokens
of SmolLM2-135M's f16 KV (23 KB a token), several whole episodes.
On Linux the child also stops when the process that started it dies (killed, not just closed):
the kernel sends it SIGTERM (`PR_SET_PDEATHSIG`), so no server outlives its trainer or eval run.
(The signal follows the starting thread: start the policy from a thread that lives as long.)
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
CACHE_RAM_MIB = 1024


def _stop_with_parent(parent: int) -> None:
    """Ask the kernel for SIGTERM when the parent dies; exit now if it already has."""
    if not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the request took effect
        sys.exit(0)


def serve(settings: dict) -> None:
    """Serve until SIGTERM/SIGINT, then shut the server down in order."""
    import xllamacpp

    _stop_with_parent(settings["parent"])
    # Blocked before the server starts, so its threads inherit the mask and sigwait gets them.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    params = xllamacpp.CommonParams()
    params.model.path = settings["model"]
    if settings["lora"]:
        params.lora_adapters = [xllamacpp.CommonAdapterLoraInfo(settings["lora"], 1.0)]
    params.hostnames = ["127.0.0.1"]
    params.port = settings["port"]
    params.n_parallel = settings["n_parallel"]
    params.n_ctx = settings["n_ctx"] * settings["n_parallel"]
    params.kv_unified = False
    params.n_threads_http = settings["n_parallel"] + 2
    params.cpuparams.n_threads = settings["threads"]
    params.cpuparams_batch.n_threads = settings["threads"]
    params.cache_ram_mib = CACHE_RAM_MIB
    params.warmup = False
    params.fit_params = False
    server = xllamacpp.Server(params)
    signal.sigwait(stop_signals)
    del server  # the destructor stops the HTTP loop and frees the model


if __name__ == "__main__":
    serve(json.loads(sys.argv[1]))
