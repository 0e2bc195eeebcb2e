"""Optional real-model sections: run them only when the pretrained weights are already on this machine.

The notebooks never download. An optional section (gpt2-small with a SAELens SAE, Gemma-2-2B with
circuit-tracer) first asks :func:`weights_available` whether every Hugging Face repository it needs
has a snapshot in the local cache; that call also switches the hub to offline mode, so the loads
that follow read the cache and never the network. The section then runs on the GPU when there is
one and on the CPU otherwise (:func:`device`; gpt2-small is fine on a CPU). To enable a section, an
instructor fills the cache once on a machine with internet, e.g. ``huggingface-cli download gpt2``.
"""
from __future__ import annotations

import os
from typing import Sequence

import torch


def device() -> str:
    """Where an optional real-model section runs: ``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def weights_available(repo_ids: Sequence[str], what: str) -> bool:
    """True when every repository in ``repo_ids`` is in the local Hugging Face cache; otherwise print
    one line naming ``what`` and the missing repositories, and return False. Turns the hub offline."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import huggingface_hub.constants
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    huggingface_hub.constants.HF_HUB_OFFLINE = True  # read once at import: set it for loads that follow
    missing = []
    for repo_id in repo_ids:
        try:
            snapshot_download(repo_id, local_files_only=True)
        except LocalEntryNotFoundError:
            missing.append(repo_id)
    if missing:
        print(f"Skipped: {what} needs {', '.join(missing)} in the local Hugging Face cache "
              f"(nothing is downloaded; see interplab.pretrained). Runs on {device()} once cached.")
    return not missing
