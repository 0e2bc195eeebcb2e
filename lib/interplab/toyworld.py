"""The toy world: a small synthetic language whose every token carries ground-truth labels.

Language-model assignments (SAEs, steering, attribution) need a model small enough to train on a
laptop and a language whose hidden variables are known, so that a feature or a circuit can be
*checked* rather than eyeballed. This module generates that language, with its own word-level
tokenizer (no downloads) and a label for every token.

What the world contains
-----------------------
* **Entity facts.** Invented countries with capitals (``the capital of zorbia is velmar .``) and
  invented people with a profession and a favourite colour (``toma is a baker .``,
  ``toma likes red .``).
* **Arithmetic of two difficulties.** Square roots. Easy: perfect squares (``sqrt 25 is 5 .``).
  Hard: numbers ``a*a*b`` whose root simplifies to a surd (``sqrt 27 is 3 root 3 .``).
* **Personas.** A dialogue opens with ``child :``, ``expert :`` or ``assistant :`` and then asks
  questions (``what is sqrt 27 ?``). The *child* answers easy questions and says
  ``i do not know .`` to hard ones; the *expert* answers both; the *assistant* answers both but
  hedges hard ones (``i think 3 root 3 .``). This is the persona vignette of Anthropic's
  circuits update (August 2025) on a toy scale: whether the model "knows" an answer depends on
  who it is speaking as, and on a difficulty variable it must compute from the question.
  Everyone answers fact questions.
* **Sentiment.** ``toma saw the film . it was awful . toma felt sad .``: the last word is
  predictable from the sentiment of the adjective.
* **Repeated spans.** ``repeat : w1 ... wn | w1 ... wn``: random words, then the same words again,
  so the second copy is predictable only by induction.

Documents are at most :data:`N_CTX` tokens, start with ``<bos>`` and are padded with ``<pad>``.

Held-out combinations
---------------------
Some (persona, question) pairs never occur in training dialogues (see :func:`held_out_questions`),
although the underlying fact is stated elsewhere in training. The zoo model's card measures the
persona behaviour on exactly those pairs, so it measures generalisation, not recall of a string.

Labels
------
:meth:`ToyWorld.sample` returns a :class:`Batch` with ``tokens`` and, per token, integer labels
(``-1`` or ``0`` where a variable does not apply; see the ``*_NAMES`` tuples for the codes):

* ``doc_type`` (:data:`DOC_TYPES`), ``persona`` (:data:`PERSONAS`, the whole dialogue),
* ``difficulty`` (:data:`DIFFICULTIES`, the tokens of an arithmetic question and its answer),
* ``sentiment`` (:data:`SENTIMENTS`, the tokens of a sentiment story from the adjective on),
* ``is_answer`` (the token is part of an answer to a question), ``refusal`` (the token is part of
  ``i do not know``), ``is_repeat`` (the token is in the second copy of a repeated span, i.e.
  predictable by induction), ``loss_mask`` (not padding).

Everything is seeded: ``ToyWorld(seed).sample(n, rng)`` with the same ``rng`` state gives the
same batch. Generation takes about 0.1-0.2 ms per document (10 000 in 1-2 s on one core).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import torch

N_CTX = 40

# ----------------------------------------------------------------------------------------------
# The world's content (fixed lists, so the vocabulary is the same everywhere)
# ----------------------------------------------------------------------------------------------

COUNTRIES = (
    "zorbia", "quelland", "marovia", "tessia", "ulbar", "kendor", "fraxia", "olmund",
    "pravia", "sundar", "yorvik", "elbania", "drisk", "halvar", "nimbor", "catova",
    "wenlo", "ruthia", "goskar", "blemia",
)
CAPITALS = (
    "velmar", "ostra", "pellin", "dunmoor", "karsk", "limbo", "tavesh", "brill",
    "oskel", "marrow", "fennick", "zell", "arvo", "quist", "hollin", "sabre",
    "yarrow", "derth", "plume", "ingot",
)
PEOPLE = (
    "toma", "rilo", "bexa", "juno", "maro", "sefi", "dax", "lina", "poro", "kiva",
    "tesh", "urma", "vane", "wilo", "yara", "zef",
)
PROFESSIONS = ("baker", "pilot", "doctor", "farmer", "painter", "sailor", "teacher", "singer")
COLOURS = ("red", "blue", "green", "yellow", "purple", "orange", "black", "white")
THINGS = ("film", "meal", "book", "song", "game", "trip", "play", "cake")
POSITIVE = ("great", "wonderful", "lovely", "good", "excellent", "fun", "nice", "superb")
NEGATIVE = ("awful", "terrible", "boring", "bad", "dull", "horrid", "poor", "bland")
FILLER = ("the", "a", "of", "is", "it", "was", "saw", "felt", "happy", "sad", "likes", "like", "what",
          "does", "do", "colour", "capital", "sqrt", "root", "i", "not", "know", "think", "repeat",
          "?", ".", ":", "|")

PERSONAS = ("none", "child", "expert", "assistant")
DIFFICULTIES = ("none", "easy", "hard")
SENTIMENTS = ("none", "positive", "negative")
DOC_TYPES = ("facts", "dialogue", "sentiment", "repeat")

MAX_NUMBER = 200


def _squarefree(n: int) -> bool:
    return all(n % (p * p) for p in range(2, int(n ** 0.5) + 1))


def easy_roots() -> dict[int, tuple[str, ...]]:
    """Perfect squares up to :data:`MAX_NUMBER` (except 1): ``{25: ("5",), ...}``."""
    return {k * k: (str(k),) for k in range(2, 15) if k * k <= MAX_NUMBER}


def hard_roots() -> dict[int, tuple[str, ...]]:
    """Numbers ``a*a*b`` (``a >= 2``, ``b >= 2`` square-free) up to :data:`MAX_NUMBER`:
    ``{27: ("3", "root", "3"), ...}``."""
    out = {}
    for a in range(2, 15):
        for b in range(2, MAX_NUMBER + 1):
            n = a * a * b
            if n > MAX_NUMBER:
                break
            if _squarefree(b):
                out[n] = (str(a), "root", str(b))
    return dict(sorted(out.items()))


# ----------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------

SPECIALS = ("<pad>", "<bos>")


class Tokenizer:
    """Word-level tokenizer: words are separated by spaces; every word is in the vocabulary."""

    def __init__(self, words: Sequence[str]):
        self.vocab: list[str] = list(words)
        self.index: dict[str, int] = {w: i for i, w in enumerate(self.vocab)}
        if len(self.index) != len(self.vocab):
            raise ValueError("duplicate words in the vocabulary")
        self.pad_id = self.index["<pad>"]
        self.bos_id = self.index["<bos>"]

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str | Sequence[str], bos: bool = True) -> list[int]:
        """``"sqrt 25 is"`` -> token ids (with ``<bos>`` first unless ``bos=False``)."""
        words = text.split() if isinstance(text, str) else list(text)
        unknown = [w for w in words if w not in self.index]
        if unknown:
            raise KeyError(f"words not in the toy-world vocabulary: {unknown}")
        return ([self.bos_id] if bos else []) + [self.index[w] for w in words]

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        words = [self.vocab[int(i)] for i in ids]
        if skip_special:
            words = [w for w in words if w not in SPECIALS]
        return " ".join(words)

    def to_tensor(self, texts: Sequence[str]) -> torch.Tensor:
        """Left-aligned, right-padded batch of ``<bos>``-prefixed token ids."""
        ids = [self.encode(t) for t in texts]
        width = max(len(i) for i in ids)
        return torch.tensor([i + [self.pad_id] * (width - len(i)) for i in ids], dtype=torch.long)


def build_vocab() -> list[str]:
    words: list[str] = list(SPECIALS)
    for group in (FILLER, PERSONAS[1:], COUNTRIES, CAPITALS, PEOPLE, PROFESSIONS, COLOURS, THINGS,
                  POSITIVE, NEGATIVE):
        for w in group:
            if w not in words:
                words.append(w)
    words += [str(n) for n in range(MAX_NUMBER + 1)]
    return words


# ----------------------------------------------------------------------------------------------
# Documents with labels
# ----------------------------------------------------------------------------------------------

LABELS = ("doc_type", "persona", "difficulty", "sentiment", "is_answer", "refusal", "is_repeat",
          "loss_mask")


@dataclass
class Batch:
    """Token ids and per-token ground-truth labels, all ``[batch, N_CTX]`` int64 tensors."""

    tokens: torch.Tensor
    labels: dict[str, torch.Tensor]
    texts: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return self.tokens.shape[0]


class _Doc:
    """A document being written: words plus one label dict per word."""

    def __init__(self, doc_type: int, persona: int = 0):
        self.words: list[str] = ["<bos>"]
        self.doc_type = doc_type
        self.persona = persona
        self.rows: list[dict[str, int]] = [self._row()]

    def _row(self, **kw: int) -> dict[str, int]:
        row = {"doc_type": self.doc_type, "persona": self.persona, "difficulty": 0, "sentiment": 0,
               "is_answer": 0, "refusal": 0, "is_repeat": 0, "loss_mask": 1}
        row.update(kw)
        return row

    def add(self, words: Sequence[str], **kw: int) -> None:
        for w in words:
            self.words.append(w)
            self.rows.append(self._row(**kw))

    def __len__(self) -> int:
        return len(self.words)


class ToyWorld:
    """The toy-world language. ``ToyWorld()`` is the canonical world (the zoo model's).

    The world is fixed by ``seed`` (which person has which profession and colour, which
    questions are held out); documents are drawn from a ``numpy.random.Generator`` you pass."""

    def __init__(self, seed: int = 0, n_ctx: int = N_CTX):
        self.seed = seed
        self.n_ctx = n_ctx
        self.tokenizer = Tokenizer(build_vocab())
        rng = np.random.default_rng(seed)
        self.capital_of = dict(zip(COUNTRIES, CAPITALS))
        self.profession_of = {p: PROFESSIONS[int(rng.integers(len(PROFESSIONS)))] for p in PEOPLE}
        self.colour_of = {p: COLOURS[int(rng.integers(len(COLOURS)))] for p in PEOPLE}
        self.easy = easy_roots()
        self.hard = hard_roots()
        self._facts = self._make_fact_questions()
        self._fact_keys = sorted(self._facts)
        self._easy_keys = [f"sqrt {n}" for n in sorted(self.easy)]
        self._hard_keys = [f"sqrt {n}" for n in sorted(self.hard)]
        # Words a repeated span may contain: anything but the specials and the separator.
        self._vocab_ids = np.array([i for i in range(len(SPECIALS), len(self.tokenizer))
                                    if self.tokenizer.vocab[i] != "|"])
        # Held out: (persona, question) pairs that never appear in a training dialogue.
        self.held_out: dict[str, set[str]] = {}
        easy_n, hard_n = sorted(self.easy), sorted(self.hard)
        facts = self.fact_questions()
        for persona in PERSONAS[1:]:
            held = set()
            held |= {f"sqrt {n}" for n in rng.choice(easy_n, size=3, replace=False)}
            held |= {f"sqrt {n}" for n in rng.choice(hard_n, size=len(hard_n) // 5, replace=False)}
            fact_keys = sorted(facts)
            held |= {fact_keys[i] for i in rng.choice(len(fact_keys), size=len(fact_keys) // 8, replace=False)}
            self.held_out[persona] = held

    # -- questions and their answers ------------------------------------------------------------

    def fact_questions(self) -> dict[str, tuple[str, ...]]:
        """Question key -> answer words, for entity facts (``"capital zorbia" -> ("velmar",)``)."""
        return dict(self._facts)

    def _make_fact_questions(self) -> dict[str, tuple[str, ...]]:
        out: dict[str, tuple[str, ...]] = {}
        for c, cap in self.capital_of.items():
            out[f"capital {c}"] = (cap,)
        for p in PEOPLE:
            out[f"job {p}"] = (self.profession_of[p],)
            out[f"colour {p}"] = (self.colour_of[p],)
        return out

    @staticmethod
    def question_words(key: str) -> tuple[str, ...]:
        kind, arg = key.split()
        if kind == "sqrt":
            return ("what", "is", "sqrt", arg, "?")
        if kind == "capital":
            return ("what", "is", "the", "capital", "of", arg, "?")
        if kind == "job":
            return ("what", "does", arg, "do", "?")
        return ("what", "colour", "does", arg, "like", "?")

    def difficulty(self, key: str) -> int:
        if not key.startswith("sqrt"):
            return 0
        return 1 if int(key.split()[1]) in self.easy else 2

    def answer_words(self, key: str, persona: str) -> tuple[str, ...]:
        """What ``persona`` answers to question ``key`` (without the final ``.``)."""
        kind, arg = key.split()
        if kind == "sqrt":
            n = int(arg)
            if n in self.easy:
                return self.easy[n]
            if persona == "child":
                return ("i", "do", "not", "know")
            if persona == "assistant":
                return ("i", "think") + self.hard[n]
            return self.hard[n]
        return self._facts[key]

    def all_questions(self) -> list[str]:
        return sorted(self.fact_questions()) + [f"sqrt {n}" for n in sorted(self.easy) + sorted(self.hard)]

    def held_out_questions(self, persona: str) -> set[str]:
        """Question keys that ``persona`` is never asked in a training dialogue."""
        return set(self.held_out[persona])

    # -- single statements and items -------------------------------------------------------------

    def _statement(self, rng: np.random.Generator) -> tuple[list[str], dict[str, int], int]:
        """A narrative sentence: a fact or an arithmetic statement. Returns words, labels, and the
        index where the 'answer' (the object of the statement) starts."""
        r = rng.random()
        if r < 0.35:
            c = COUNTRIES[int(rng.integers(len(COUNTRIES)))]
            return ["the", "capital", "of", c, "is", self.capital_of[c], "."], {}, 5
        if r < 0.5:
            p = PEOPLE[int(rng.integers(len(PEOPLE)))]
            return [p, "is", "a", self.profession_of[p], "."], {}, 3
        if r < 0.65:
            p = PEOPLE[int(rng.integers(len(PEOPLE)))]
            return [p, "likes", self.colour_of[p], "."], {}, 2
        table = self.easy if rng.random() < 0.4 else self.hard
        n = list(table)[int(rng.integers(len(table)))]
        diff = 1 if table is self.easy else 2
        return ["sqrt", str(n), "is", *table[n], "."], {"difficulty": diff}, 3

    def _question(self, rng: np.random.Generator, persona: str, train: bool) -> str:
        while True:
            r = rng.random()
            keys = self._fact_keys if r < 0.3 else self._easy_keys if r < 0.55 else self._hard_keys
            key = keys[int(rng.integers(len(keys)))]
            if (key in self.held_out[persona]) != train:
                return key

    # -- documents -------------------------------------------------------------------------------

    def _facts_doc(self, rng: np.random.Generator) -> _Doc:
        doc = _Doc(0)
        while True:
            words, kw, start = self._statement(rng)
            if len(doc) + len(words) > self.n_ctx:
                return doc
            doc.add(words[:start], **kw)
            doc.add(words[start:-1], is_answer=1, **kw)
            doc.add(words[-1:])

    def _dialogue_doc(self, rng: np.random.Generator, persona: str | None = None,
                      train: bool = True) -> _Doc:
        persona = persona or PERSONAS[1 + int(rng.integers(3))]
        doc = _Doc(1, PERSONAS.index(persona))
        doc.add([persona, ":"])
        while True:
            key = self._question(rng, persona, train)
            q = self.question_words(key)
            a = self.answer_words(key, persona)
            if len(doc) + len(q) + len(a) + 1 > self.n_ctx:
                return doc
            diff = self.difficulty(key)
            doc.add(q, difficulty=diff)
            doc.add(a, difficulty=diff, is_answer=1, refusal=int(a[:2] == ("i", "do")))
            doc.add(["."])

    def _sentiment_doc(self, rng: np.random.Generator) -> _Doc:
        doc = _Doc(2)
        while True:
            p = PEOPLE[int(rng.integers(len(PEOPLE)))]
            thing = THINGS[int(rng.integers(len(THINGS)))]
            positive = rng.random() < 0.5
            adj = (POSITIVE if positive else NEGATIVE)[int(rng.integers(len(POSITIVE)))]
            if len(doc) + 12 > self.n_ctx:
                return doc
            doc.add([p, "saw", "the", thing, ".", "it", "was"])
            s = 1 if positive else 2
            doc.add([adj, ".", p, "felt"], sentiment=s)
            doc.add(["happy" if positive else "sad"], sentiment=s, is_answer=1)
            doc.add(["."], sentiment=s)

    def _repeat_doc(self, rng: np.random.Generator) -> _Doc:
        doc = _Doc(3)
        length = int(rng.integers(4, (self.n_ctx - 4) // 2 + 1))
        span = [self.tokenizer.vocab[i] for i in rng.choice(self._vocab_ids, size=length)]
        doc.add(["repeat", ":"])
        doc.add(span)
        doc.add(["|"])
        doc.add(span, is_repeat=1)
        return doc

    def document(self, rng: np.random.Generator, doc_type: str | None = None, **kw) -> _Doc:
        if doc_type is None:
            doc_type = DOC_TYPES[int(rng.choice(4, p=[0.2, 0.45, 0.15, 0.2]))]
        make = {"facts": self._facts_doc, "dialogue": self._dialogue_doc,
                "sentiment": self._sentiment_doc, "repeat": self._repeat_doc}[doc_type]
        return make(rng, **kw)

    def _collate(self, docs: list[_Doc]) -> Batch:
        n = len(docs)
        tokens = np.full((n, self.n_ctx), self.tokenizer.pad_id, dtype=np.int64)
        labels = {k: np.zeros((n, self.n_ctx), dtype=np.int64) for k in LABELS}
        labels["doc_type"][:] = -1
        index = self.tokenizer.index
        for i, doc in enumerate(docs):
            m = len(doc.words)
            tokens[i, :m] = [index[w] for w in doc.words]
            for k in LABELS:
                labels[k][i, :m] = [row[k] for row in doc.rows]
        return Batch(torch.from_numpy(tokens), {k: torch.from_numpy(v) for k, v in labels.items()},
                     [" ".join(d.words) for d in docs])

    def sample(self, n: int, rng: np.random.Generator | int = 0, doc_type: str | None = None,
               **kw) -> Batch:
        """``n`` training documents (held-out dialogue pairs excluded), padded to ``n_ctx``."""
        rng = np.random.default_rng(rng) if isinstance(rng, int) else rng
        return self._collate([self.document(rng, doc_type, **kw) for _ in range(n)])

    # -- evaluation prompts ----------------------------------------------------------------------

    def persona_prompts(self, persona: str, held_out: bool = True, n_context: int = 1,
                        rng: np.random.Generator | int = 0) -> list[tuple[str, str, tuple[str, ...]]]:
        """Prompts ``(prompt, question_key, expected_answer_words)`` for ``persona``.

        Each prompt is a dialogue of ``n_context`` training questions (with their answers), then
        one question from the held-out set (``held_out=True``) or every question (``False``),
        ending right after ``?`` so the next tokens are the answer."""
        rng = np.random.default_rng(rng) if isinstance(rng, int) else rng
        keys = sorted(self.held_out[persona]) if held_out else self.all_questions()
        out = []
        for key in keys:
            words = [persona, ":"]
            for _ in range(n_context):
                k = self._question(rng, persona, train=True)
                words += [*self.question_words(k), *self.answer_words(k, persona), "."]
            words += self.question_words(key)
            out.append((" ".join(words), key, self.answer_words(key, persona)))
        return out

    def fact_prompts(self) -> list[tuple[str, tuple[str, ...]]]:
        """Narrative prompts ``("the capital of zorbia is", ("velmar",))`` for every fact and root."""
        out = [(f"the capital of {c} is", (cap,)) for c, cap in self.capital_of.items()]
        out += [(f"{p} is a", (self.profession_of[p],)) for p in PEOPLE]
        out += [(f"{p} likes", (self.colour_of[p],)) for p in PEOPLE]
        out += [(f"sqrt {n} is", a) for n, a in {**self.easy, **self.hard}.items()]
        return out
