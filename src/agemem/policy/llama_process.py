"""The child process of `LlamaCppPolicy`: one `xllamacpp.Server` (prebuilt llama.cpp) serving a
GGUF, and optionally a GGUF LoRA adapter, on 127.0.0.1 until SIGTERM.

Run as a script (`python llama_process.py '<json settings>'`), so that it imports neither torch
nor agemem: a start costs the interpreter, xllamacpp and the model load (0.7 s on 2 busy cores)
and a crash in native code cannot take the trainer down. Settings (all required): model, lora
(a path or null), port, n_parallel, n_ctx (per slot), threads.

Choices: the context is split evenly between the slots (`kv_unified` off), so each request gets
exactly `n_ctx` tokens whatever the others hold; one HTTP thread per slot plus two, so every slot
can be busy at once (llama.cpp's default of 8 HTTP threads would cap 16 slots at 8 requests); no
warm-up decode and no memory fitting (CPU only: nothing to fit), which shortens a restart.
"""

from __future__ import annotations

import json
import signal
import sys


def serve(settings: dict) -> None:
    """Serve until SIGTERM/SIGINT, then shut the server down in order."""
    import xllamacpp

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
    params.warmup = False
    params.fit_params = False
    server = xllamacpp.Server(params)
    signal.sigwait(stop_signals)
    del server  # the destructor stops the HTTP loop and frees the model


if __name__ == "__main__":
    serve(json.loads(sys.argv[1]))
