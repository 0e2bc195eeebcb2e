"""An indirect-object-identification (IOI) task in a small world of its own (Wang et al. 2022).

"when anna and boris went to the market , boris gave the book to" -> ``anna``: two names are
introduced, one of them (the subject ``S``) is repeated, and the answer is the other one (the
indirect object ``IO``). The corrupted prompts are the ``ABC`` prompts of Wang et al.: the same
template with three fresh, distinct names, so that nothing in the prompt points to ``IO`` or ``S``.

The task has its own word-level vocabulary (it does not touch the toy world's, so no existing zoo
model changes). Every name is one token, so all prompts of one template have the same length and
the same positions (``IO``, ``S1``, ``S2``, ``END``) can be compared across a batch; ``ioi_prompts``
always draws one template per batch.

Held-out data: the last ``N_TEST_TEMPLATES`` templates (new sentences made of training words) and
the unordered name pairs of the held-out part of the pair split never appear in training. Every
*name* is seen in training (a never-seen token has an untrained embedding and unembedding, which no
model could use), but never in a held-out pair.
"""
from __future__ import annotations

import hashlib
import itertools
from typing import Literal

import torch
from jaxtyping import Int
from torch import Tensor

NAMES = (
    "anna", "boris", "carl", "dora", "emil", "frida", "georg", "hanna", "ivan", "julia", "karl", "lena",
    "max", "nina", "oskar", "paula", "quinn", "rosa", "sven", "tina", "udo", "vera", "walter", "xenia",
    "yann", "zoe", "adam", "bea", "cem", "dana", "erik", "fiona",
)
PLACES = ("market", "park", "school", "garden", "station", "library", "beach", "river")
OBJECTS = ("book", "ball", "apple", "cake", "key", "letter", "ring", "drink")
# [A] and [B] are the two names of the first clause, [S] the repeated subject, [P] a place, [O] an object.
TEMPLATES = (
    "when [A] and [B] went to the [P] , [S] gave the [O] to",
    "then , [A] and [B] had a lot of fun at the [P] . [S] gave a [O] to",
    "while [A] and [B] were working at the [P] , [S] handed the [O] to",
    "after [A] and [B] got a [O] at the [P] , [S] decided to give it to",
    "when [A] and [B] got to the [P] , [S] showed the [O] to",
    "[A] and [B] went to the [P] . [S] passed the [O] to",
    "the [P] was busy , so [A] and [B] left . [S] threw the [O] to",
    "friends [A] and [B] found a [O] at the [P] . then [S] gave it to",
    "at the [P] , [A] and [B] were happy . [S] handed a [O] to",
    "[A] and [B] were at the [P] , and [S] showed a [O] to",
    # held out: never seen in training (new sentences, every word a training word)
    "after [A] and [B] went to the [P] , [S] passed a [O] to",
    "then [A] and [B] were working at the [P] . [S] threw it to",
)
N_TEST_TEMPLATES = 2
TEST_PAIR_FRACTION = 0.2
BOS = "<bos>"

Split = Literal["train", "test", "all"]


def _template_words() -> list[str]:
    words: list[str] = []
    for template in TEMPLATES:
        for word in template.split():
            if not word.startswith("[") and word not in words:
                words.append(word)
    return words


VOCAB: tuple[str, ...] = (BOS, *NAMES, *PLACES, *OBJECTS, *_template_words())
TOKEN = {word: i for i, word in enumerate(VOCAB)}
MAX_LEN = 1 + max(len(t.split()) for t in TEMPLATES)


def encode(text: str) -> Int[Tensor, "pos"]:  # noqa: F821 (a jaxtyping dimension)
    """``"when anna and ..."`` -> token ids, ``<bos>`` first."""
    unknown = [w for w in text.split() if w not in TOKEN]
    if unknown:
        raise KeyError(f"words not in the IOI vocabulary: {unknown}")
    return torch.tensor([TOKEN[BOS]] + [TOKEN[w] for w in text.split()])


def decode(ids: Int[Tensor, "pos"]) -> str:  # noqa: F821 (a jaxtyping dimension)
    return " ".join(VOCAB[int(i)] for i in ids if int(i) != TOKEN[BOS])


def _is_test_pair(a: int, b: int) -> bool:
    """A fixed, seed-free split of unordered name pairs (a hash, so it never changes)."""
    key = f"{min(a, b)}-{max(a, b)}".encode()
    return hashlib.sha256(key).digest()[0] < 256 * TEST_PAIR_FRACTION


PAIRS: dict[str, list[tuple[int, int]]] = {"train": [], "test": []}
for _a, _b in itertools.permutations(range(len(NAMES)), 2):
    PAIRS["test" if _is_test_pair(_a, _b) else "train"].append((_a, _b))
PAIRS["all"] = PAIRS["train"] + PAIRS["test"]


def templates(split: Split) -> range:
    n_train = len(TEMPLATES) - N_TEST_TEMPLATES
    return {"train": range(n_train), "test": range(n_train, len(TEMPLATES)), "all": range(len(TEMPLATES))}[split]


def _fill(template: str, a: int, b: int, s: int, place: int, obj: int) -> list[int]:
    slots = {"[A]": NAMES[a], "[B]": NAMES[b], "[S]": NAMES[s], "[P]": PLACES[place], "[O]": OBJECTS[obj]}
    return [TOKEN[BOS]] + [TOKEN[slots.get(w, w)] for w in template.split()]


def ioi_prompts(batch: int, generator: torch.Generator, split: Split = "all",
                template: int | None = None) -> dict[str, Tensor]:
    """A batch of IOI prompts of one template, and their ABC corruptions.

    Each row is ``ABBA`` (``IO`` named first) or ``BABA`` (``S`` first) at random. Returns ``clean``
    and ``corrupted`` (``batch x pos``), ``io`` and ``s`` (the clean prompt's answer and repeated
    name, as token ids), and the positions ``pos_io``, ``pos_s1``, ``pos_s2`` (per row) and
    ``pos_end`` (the last position, where the answer is predicted)."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    allowed = templates(split)
    if template is None:
        template = allowed[int(torch.randint(len(allowed), (1,), generator=generator))]
    elif template not in allowed:
        raise ValueError(f"template {template} is not in the {split!r} split {list(allowed)}")
    pairs = PAIRS[split]
    words = TEMPLATES[template].split()
    first, second = 1 + words.index("[A]"), 1 + words.index("[B]")
    clean, corrupted, io, s, pos_io, pos_s1 = [], [], [], [], [], []
    for _ in range(batch):
        io_name, s_name = pairs[int(torch.randint(len(pairs), (1,), generator=generator))]
        place, obj = (int(torch.randint(n, (1,), generator=generator)) for n in (len(PLACES), len(OBJECTS)))
        abba = bool(torch.randint(2, (1,), generator=generator))
        a, b = (io_name, s_name) if abba else (s_name, io_name)
        clean.append(_fill(TEMPLATES[template], a, b, s_name, place, obj))
        # ABC: three fresh names, all different from each other and from IO and S.
        others = [n for n in torch.randperm(len(NAMES), generator=generator).tolist() if n not in (io_name, s_name)]
        corrupted.append(_fill(TEMPLATES[template], others[0], others[1], others[2], place, obj))
        io.append(TOKEN[NAMES[io_name]])
        s.append(TOKEN[NAMES[s_name]])
        pos_io.append(first if abba else second)
        pos_s1.append(second if abba else first)
    clean_t = torch.tensor(clean)
    return {
        "clean": clean_t, "corrupted": torch.tensor(corrupted), "io": torch.tensor(io), "s": torch.tensor(s),
        "pos_io": torch.tensor(pos_io), "pos_s1": torch.tensor(pos_s1),
        "pos_s2": torch.full((batch,), 1 + words.index("[S]")),
        "pos_end": torch.full((batch,), clean_t.shape[1] - 1),
    }
