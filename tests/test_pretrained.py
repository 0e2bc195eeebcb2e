"""Optional real-model sections run only when their weights are in the local Hugging Face cache.

A fake cache (the hub's own on-disk layout: ``models--org--name/refs/main`` naming a snapshot folder)
stands in for downloaded weights; nothing here touches the network."""
from __future__ import annotations

import huggingface_hub.constants
import pytest

from interplab import pretrained


def _fake_snapshot(cache, repo_id: str) -> None:
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    (repo / "snapshots" / ("0" * 40) / "config.json").write_text("{}")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # the helper itself must switch the hub offline
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")  # (and monkeypatch restores both afterwards)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return tmp_path


def test_missing_weights_skip_with_one_line_naming_them(cache, capsys):
    _fake_snapshot(cache, "gpt2")
    assert not pretrained.weights_available(["gpt2", "jbloom/GPT2-Small-SAEs-Reformatted"], "the section")
    out = capsys.readouterr().out.strip()
    assert out.startswith("Skipped: the section needs jbloom/GPT2-Small-SAEs-Reformatted") and "\n" not in out
    assert "gpt2," not in out  # the cached one is not listed
    assert huggingface_hub.constants.HF_HUB_OFFLINE is True  # loads that follow cannot download


def test_cached_weights_run_on_the_cpu_without_a_gpu(cache, capsys, monkeypatch):
    for repo_id in ("gpt2", "jbloom/GPT2-Small-SAEs-Reformatted"):
        _fake_snapshot(cache, repo_id)
    assert pretrained.weights_available(["gpt2", "jbloom/GPT2-Small-SAEs-Reformatted"], "the section")
    assert capsys.readouterr().out == ""
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert pretrained.device() == "cpu"
