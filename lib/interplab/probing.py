"""Toy-world data for the probing assignment: class labels per token and interchange pairs.

Shared by the notebook (``assignments/probing``), its checks and the tests, so that the prompts a
student probes and intervenes on are the prompts the checks draw. No probing, lens, erasure or
interchange code lives here: that is what the students write.

* :data:`RESID_POINTS`: the five distinct points of ``toyworld-lm``'s residual stream
  (``blocks.0.hook_resid_post`` and ``blocks.1.hook_resid_pre`` are the same point), and
  :data:`LENS_POINTS`, the nine of ``toyworld-lm-4l`` (:data:`LENS_MODEL`), which the lenses read;
* :func:`class_labels`: a toy-world label as a class index per token (``-1`` where the variable
  does not apply, at ``<bos>`` and on padding);
* :func:`persona_swap_pairs`: (base, source) dialogues spoken by the child and the expert, each
  ending at the ``?`` of a hard question, and the token the base would say if it had the source's
  persona (the counterfactual label of an interchange intervention);
* :func:`dialogue_question_marks`: dialogues of every persona, ending at a question's ``?``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from interplab.steering import hard_questions, prompt_tokens
from interplab.toyworld import DIFFICULTIES, DOC_TYPES, PERSONAS, SENTIMENTS, Batch, ToyWorld


def resid_points(n_layers: int) -> tuple[str, ...]:
    """The ``2 * n_layers + 1`` distinct residual-stream points of an ``n_layers`` model, embedding
    first (``blocks.{l}.hook_resid_pre`` for ``l > 0`` repeats ``blocks.{l-1}.hook_resid_post``)."""
    return ("blocks.0.hook_resid_pre",
            *(f"blocks.{layer}.hook_resid_{kind}" for layer in range(n_layers) for kind in ("mid", "post")))


RESID_POINTS = resid_points(2)
LENS_MODEL = "toyworld-lm-4l"  # the lenses read a deeper model: eight intermediate points, not four
LENS_POINTS = resid_points(4)

# label -> class names; a token's class is its toy-world code minus the offset ("none" is not a class)
CLASSES: dict[str, tuple[str, ...]] = {
    "persona": PERSONAS[1:], "difficulty": DIFFICULTIES[1:], "sentiment": SENTIMENTS[1:], "doc_type": DOC_TYPES,
}
_OFFSET = {"persona": 1, "difficulty": 1, "sentiment": 1, "doc_type": 0}


def class_labels(batch: Batch, label: str) -> torch.Tensor:
    """``[batch, pos]`` int64: the class of ``label`` at each token (an index into ``CLASSES[label]``),
    ``-1`` where the variable does not apply, on padding and at ``<bos>`` (the same token everywhere)."""
    if label not in CLASSES:
        raise ValueError(f"unknown label {label!r}; expected one of {sorted(CLASSES)}")
    classes = batch.labels[label] - _OFFSET[label]
    classes = classes.masked_fill(~batch.labels["loss_mask"].bool(), -1)
    classes[:, 0] = -1
    return classes.masked_fill(classes < 0, -1)


@dataclass
class SwapPairs:
    """Interchange pairs: ``base``/``source`` tokens ``[n, pos]`` (right-padded), each prompt's ``?``
    (``base_at``, ``source_at``), what the base says (``base_token``) and what it would say with
    the source's persona (``counterfactual``), and the personas (``base_persona``, ``source_persona``)."""

    base: torch.Tensor
    source: torch.Tensor
    base_at: torch.Tensor
    source_at: torch.Tensor
    base_token: torch.Tensor
    counterfactual: torch.Tensor
    base_persona: list[str]
    source_persona: list[str]

    def __len__(self) -> int:
        return len(self.base)


def _dialogue(rng: np.random.Generator, world: ToyWorld, persona: str, last: str) -> str:
    """``persona : `` then zero to two answered training questions, then question ``last`` up to ``?``."""
    words = [persona, ":"]
    for _ in range(int(rng.integers(0, 3))):
        key = world._question(rng, persona, train=True)
        words += [*world.question_words(key), *world.answer_words(key, persona), "."]
    return " ".join([*words, *world.question_words(last)])


def persona_swap_pairs(world: ToyWorld, n: int, rng: np.random.Generator | int = 0,
                       same_question: bool = False) -> SwapPairs:
    """``n`` pairs (half child base / expert source, half the reverse) on hard square-root questions.

    Base and source have their own context and, unless ``same_question``, different final questions:
    only the persona should move from source to base. The child refuses hard questions (``i``), the
    expert answers them (first word of the root, ``3`` of ``3 root 3``)."""
    rng = np.random.default_rng(rng) if isinstance(rng, int) else rng
    hard = hard_questions(world)
    index = world.tokenizer.index
    base_texts, source_texts, base_persona, source_persona, base_token, counterfactual = [], [], [], [], [], []
    for i in range(n):
        b, s = ("child", "expert") if i % 2 == 0 else ("expert", "child")
        q_base = hard[int(rng.integers(len(hard)))]
        q_source = q_base if same_question else hard[int(rng.integers(len(hard)))]
        base_texts.append(_dialogue(rng, world, b, q_base))
        source_texts.append(_dialogue(rng, world, s, q_source))
        base_persona.append(b)
        source_persona.append(s)
        base_token.append(index[world.answer_words(q_base, b)[0]])
        counterfactual.append(index[world.answer_words(q_base, s)[0]])
    base, base_at = prompt_tokens(world, base_texts)
    source, source_at = prompt_tokens(world, source_texts)
    return SwapPairs(base, source, base_at, source_at, torch.tensor(base_token), torch.tensor(counterfactual),
                     base_persona, source_persona)


def dialogue_question_marks(world: ToyWorld, n: int, rng: np.random.Generator | int = 0,
                            personas: Sequence[str] = PERSONAS[1:]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(tokens [n, pos], at [n], persona class [n])``: dialogues of the given personas in turn, each
    ending at the ``?`` of a random question (every kind), with ``at`` the index of that ``?``.
    The class is the index into ``CLASSES["persona"]``."""
    rng = np.random.default_rng(rng) if isinstance(rng, int) else rng
    questions = world.all_questions()
    texts, classes = [], []
    for i in range(n):
        persona = personas[i % len(personas)]
        texts.append(_dialogue(rng, world, persona, questions[int(rng.integers(len(questions)))]))
        classes.append(CLASSES["persona"].index(persona))
    tokens, at = prompt_tokens(world, texts)
    return tokens, at, torch.tensor(classes)
