"""Trained policies shipped as LoRA adapters over an embedded base model.

A policy directory holds `adapters.json` (the base model preset, the adapters in the order
they apply, the command that reproduces them) and one subdirectory per adapter in peft's
format (`adapter_config.json`, `adapter_model.safetensors`). Loading applies each adapter to
the base and merges it in, in order: SFT's adapter, then GRPO's, which was trained on the model
SFT's had been merged into. `export_policy` writes such a directory from training runs' adapters
(their `final-adapter/`), in bfloat16 to keep the files small.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel

MANIFEST = "adapters.json"
WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"


class PolicyFilesError(FileNotFoundError):
    """A policy directory or adapter is missing or malformed; the message names the fix."""


@dataclass(frozen=True)
class PolicyManifest:
    base: str  # a model preset
    adapters: tuple[str, ...]  # subdirectories, in the order they apply
    command: str  # what reproduces the adapters

    @classmethod
    def read(cls, directory: Path) -> PolicyManifest:
        path = directory / MANIFEST
        if not path.is_file():
            raise PolicyFilesError(f"{directory} holds no {MANIFEST}: not a shipped policy")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(data["base"], tuple(data["adapters"]), data.get("command", ""))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise PolicyFilesError(f"{path} is not a policy manifest ({err})") from None


def apply_adapters(
    model: PreTrainedModel, directory: str | Path, only: tuple[str, ...] | None = None
) -> PreTrainedModel:
    """`model` (the manifest's base) with the adapters of `directory` merged in, in the
    manifest's order: all of them, or those named in `only`."""

    directory = Path(directory)
    manifest = PolicyManifest.read(directory)
    missing = sorted(set(only or ()) - set(manifest.adapters))
    if missing:
        raise PolicyFilesError(f"{directory} has no adapter {missing}; it has {manifest.adapters}")
    for name in manifest.adapters:
        if only is not None and name not in only:
            continue
        adapter = directory / name
        if not (adapter / WEIGHTS).is_file() or not (adapter / CONFIG).is_file():
            raise PolicyFilesError(f"adapter {adapter} lacks {WEIGHTS} or {CONFIG}")
        model = merge_adapter(model, adapter)
    return model


def merge_adapter(model: PreTrainedModel, adapter: str | Path) -> PreTrainedModel:
    """`model` with the peft LoRA adapter directory `adapter` merged into its weights."""
    from peft import PeftModel

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated")
        return PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()


def export_policy(
    adapters: list[tuple[str, str | Path]], out: str | Path, *, base: str, command: str
) -> Path:
    """Write a policy directory at `out` from (name, adapter directory) pairs, in the order
    they apply; weights in bfloat16. Written beside and renamed into place."""
    out = Path(out)
    if not adapters:
        raise ValueError("no adapter to export: give at least one (name, directory)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name, source in adapters:
            source = Path(source)
            if not (source / WEIGHTS).is_file() or not (source / CONFIG).is_file():
                raise PolicyFilesError(
                    f"{source} is not a LoRA adapter (no {WEIGHTS} / {CONFIG}); pass a training "
                    "run's final-adapter/ directory"
                )
            (tmp / name).mkdir()
            shutil.copy(source / CONFIG, tmp / name / CONFIG)
            weights = {k: v.to(torch.bfloat16) for k, v in load_file(source / WEIGHTS).items()}
            save_file(weights, tmp / name / WEIGHTS)
        manifest = {"base": base, "adapters": [name for name, _ in adapters], "command": command}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        tmp.chmod(0o755)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
