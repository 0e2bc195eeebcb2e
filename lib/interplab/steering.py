"""Toy-world prompts for the steering assignment: contrast pairs and padded token batches.

Shared by the notebook (``assignments/steering``), its checks and the tests, so that the prompts
a student steers are the prompts the checks draw. No steering code lives here: that is what the
students write.

* :func:`sentiment_pair`: two stories that differ only in the adjective, ending at ``felt``
  (``toma saw the film . it was great . toma felt`` / ``... it was awful . toma felt``), sometimes
  after one complete story, so that prompts have different lengths;
* :func:`persona_pair`: the same dialogue spoken by two personas (zero to two answered questions,
  each in that persona's own words, then one question ending at ``?``);
* :func:`prompt_tokens`: right-padded ``<bos>``-prefixed tokens and the index of each prompt's
  last token (where the next-token prediction is read).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from interplab.toyworld import NEGATIVE, PEOPLE, POSITIVE, THINGS, ToyWorld


def _pick(rng: np.random.Generator, items: Sequence[Any]) -> Any:
    return items[int(rng.integers(len(items)))]


def _story_prefix(rng: np.random.Generator) -> list[str]:
    """Zero or one complete sentiment story."""
    if rng.random() < 0.5:
        return []
    positive = rng.random() < 0.5
    p = _pick(rng, PEOPLE)
    return [p, "saw", "the", _pick(rng, THINGS), ".", "it", "was", _pick(rng, POSITIVE if positive else NEGATIVE),
            ".", p, "felt", "happy" if positive else "sad", "."]


def sentiment_pair(rng: np.random.Generator) -> tuple[str, str]:
    """``(positive, negative)``: the same story with a positive and a negative adjective, ending at
    ``felt`` (the model's next word is ``happy`` or ``sad``)."""
    p, thing = _pick(rng, PEOPLE), _pick(rng, THINGS)
    prefix = _story_prefix(rng)
    good, bad = _pick(rng, POSITIVE), _pick(rng, NEGATIVE)

    def story(adjective: str) -> str:
        return " ".join([*prefix, p, "saw", "the", thing, ".", "it", "was", adjective, ".", p, "felt"])

    return story(good), story(bad)


def persona_pair(rng: np.random.Generator, world: ToyWorld, first: str = "expert", second: str = "child",
                 questions: Sequence[str] | None = None) -> tuple[str, str]:
    """The same dialogue spoken by ``first`` and by ``second``: zero to two answered training
    questions (each persona answers in its own words), then one question from ``questions``
    (default: every question of the world) ending at ``?``."""
    keys = [world._question(rng, first, train=True) for _ in range(int(rng.integers(0, 3)))]
    last = _pick(rng, list(questions) if questions is not None else world.all_questions())

    def dialogue(persona: str) -> str:
        words = [persona, ":"]
        for k in keys:
            words += [*world.question_words(k), *world.answer_words(k, persona), "."]
        return " ".join([*words, *world.question_words(last)])

    return dialogue(first), dialogue(second)


def hard_questions(world: ToyWorld) -> list[str]:
    """Keys of every hard square-root question (``"sqrt 27"``...)."""
    return [f"sqrt {n}" for n in sorted(world.hard)]


def prompt_tokens(world: ToyWorld, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tokens [n, pos], last [n])``: right-padded, ``<bos>``-prefixed token ids, and the index of
    each prompt's last token."""
    return world.tokenizer.to_tensor(list(texts)), torch.tensor([len(t.split()) for t in texts])
