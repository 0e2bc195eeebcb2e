"""Toy-world fact prompts for the editing assignment (causal tracing and ROME on ``toyworld-lm``).

Shared by the notebook (``assignments/editing``), its checks and the tests, so that the prompts a
student traces and edits are the prompts the checks draw. No tracing or editing code lives here:
that is what the students write.

* :func:`fact_prompt`: ``the capital of zorbia is``, optionally after a context sentence
  (:data:`CONTEXTS`), as ROME reads a fact's key after several contexts;
* :func:`paraphrases`: the same question asked in a dialogue by each persona
  (``expert : what is the capital of zorbia ?``), the toy world's only other way to ask it;
* :func:`fact_batch`: tokens of prompts of one length (no padding: every prediction is read at
  the last position) and the mask of the subject (country) token;
* :func:`with_mlp_out`: a copy of the model with one MLP's output weights replaced (the edited model).
"""
from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import torch

from interplab.toyworld import COUNTRIES, PERSONAS, ToyWorld

# Context sentences put before a fact prompt: true toy-world statements of one length (five words),
# so the prompts of one fact after different contexts make one batch without padding.
CONTEXTS = ("sqrt 25 is 5 .", "sqrt 49 is 7 .", "sqrt 16 is 4 .", "sqrt 121 is 11 .", "sqrt 64 is 8 .")


def _known(country: str) -> str:
    if country not in COUNTRIES:
        raise KeyError(f"{country!r} is not a toy-world country; known: {', '.join(COUNTRIES)}")
    return country


def fact_prompt(country: str, context: str = "") -> str:
    """``"<context> the capital of <country> is"`` (the answer is the next word)."""
    return f"{context} the capital of {_known(country)} is".strip()


def paraphrases(country: str) -> list[str]:
    """The question about ``country``'s capital as each persona asks it in a dialogue."""
    return [f"{persona} : what is the capital of {_known(country)} ?" for persona in PERSONAS[1:]]


def fact_batch(world: ToyWorld, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tokens [n, pos], subject_mask [n, pos])`` for prompts of one length (``<bos>`` first);
    the subject is the country token."""
    ids = [world.tokenizer.encode(p) for p in prompts]
    if len({len(i) for i in ids}) != 1:
        raise ValueError(f"fact_batch needs prompts of one length (no padding), got lengths {sorted({len(i) for i in ids})}")
    tokens = torch.tensor(ids)
    countries = torch.tensor([world.tokenizer.index[c] for c in COUNTRIES])
    return tokens, torch.isin(tokens, countries)


def capital_ids(world: ToyWorld, countries: Sequence[str]) -> torch.Tensor:
    """Token id of each country's true capital."""
    return torch.tensor([world.tokenizer.index[world.capital_of[c]] for c in countries])


def counterfactual(world: ToyWorld, country: str, rng: np.random.Generator) -> str:
    """A new capital for ``country``: another country's capital, drawn from ``rng``."""
    others = [world.capital_of[c] for c in COUNTRIES if c != country]
    return others[int(rng.integers(len(others)))]


def with_mlp_out(model, layer: int, W_out: torch.Tensor):
    """A copy of ``model`` whose ``blocks[layer].mlp.W_out`` is ``W_out`` (the original is untouched)."""
    edited = copy.deepcopy(model)
    with torch.no_grad():
        edited.blocks[layer].mlp.W_out.copy_(W_out.to(edited.blocks[layer].mlp.W_out.dtype))
    return edited
