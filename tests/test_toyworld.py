"""The toy-world generator: vocabulary, determinism, speed, and that every label is the truth.

Labels are checked against facts recomputed here independently (integer square roots with
``math.isqrt``, re-parsing the generated text), not against the generator's own tables."""
from __future__ import annotations

import math
import re
import time

import pytest
import torch

from interplab import toyworld as tw

WORLD = tw.ToyWorld()


@pytest.fixture(scope="module")
def batch() -> tw.Batch:
    return WORLD.sample(3000, 7)


def test_vocabulary_is_small_and_tokenizer_round_trips() -> None:
    tok = WORLD.tokenizer
    assert len(tok) <= 1000
    text = "expert : what is sqrt 27 ? 3 root 3 ."
    ids = tok.encode(text)
    assert ids[0] == tok.bos_id
    assert tok.decode(ids) == text
    with pytest.raises(KeyError, match="not in the toy-world vocabulary"):
        tok.encode("the capital of france")
    padded = tok.to_tensor(["sqrt 4 is 2 .", "toma likes"])
    assert padded.shape == (2, 6) and padded[1, -1] == tok.pad_id


def test_seeded_and_fast() -> None:
    a, b = WORLD.sample(200, 3), WORLD.sample(200, 3)
    assert torch.equal(a.tokens, b.tokens) and all(torch.equal(a.labels[k], b.labels[k]) for k in tw.LABELS)
    assert not torch.equal(a.tokens, WORLD.sample(200, 4).tokens)
    # The world itself (who has which job) is a function of its seed.
    assert tw.ToyWorld(0).profession_of == WORLD.profession_of
    assert tw.ToyWorld(1).profession_of != WORLD.profession_of
    start = time.perf_counter()
    WORLD.sample(2000, 0)
    print(f"2000 documents: {time.perf_counter() - start:.2f} s")  # measured, not asserted


def test_shapes_and_padding(batch: tw.Batch) -> None:
    assert batch.tokens.shape == (3000, tw.N_CTX)
    assert set(batch.labels) == set(tw.LABELS)
    pad = batch.tokens == WORLD.tokenizer.pad_id
    assert torch.equal(batch.labels["loss_mask"] == 0, pad)
    assert (batch.tokens[:, 0] == WORLD.tokenizer.bos_id).all()
    assert set(batch.labels["doc_type"].unique().tolist()) == {-1, 0, 1, 2, 3}


def _squarefree(n: int) -> bool:
    return all(n % (p * p) for p in range(2, n))


def test_arithmetic_answers_are_true_and_difficulty_is_whether_the_root_is_whole() -> None:
    for n, words in WORLD.easy.items():
        assert math.isqrt(n) ** 2 == n and words == (str(math.isqrt(n)),)
    for n, (a, root, b) in WORLD.hard.items():
        assert root == "root" and int(a) ** 2 * int(b) == n and int(a) >= 2 and _squarefree(int(b))
        assert math.isqrt(n) ** 2 != n
    assert WORLD.answer_words("sqrt 25", "child") == ("5",)
    assert WORLD.answer_words("sqrt 27", "child") == ("i", "do", "not", "know")
    assert WORLD.answer_words("sqrt 27", "expert") == ("3", "root", "3")
    assert WORLD.answer_words("sqrt 27", "assistant") == ("i", "think", "3", "root", "3")


def _dialogue_items(text: str) -> tuple[str, list[tuple[str, str]]]:
    """Re-parse a generated dialogue: persona and (question, answer) pairs."""
    body = text.removeprefix("<bos> ").replace(" <pad>", "")
    persona, rest = body.split(" : ", 1)
    items = re.findall(r"(what [^?]*) \? ([^.]*) \.", rest)
    return persona, items


def test_dialogues_follow_the_persona_rules_and_skip_held_out_pairs(batch: tw.Batch) -> None:
    dialogues = [t for t, d in zip(batch.texts, batch.labels["doc_type"][:, 0].tolist()) if d == 1]
    assert len(dialogues) > 500
    seen = {p: 0 for p in ("child", "expert", "assistant")}
    for text in dialogues:
        persona, items = _dialogue_items(text)
        seen[persona] += 1
        for question, answer in items:
            m = re.fullmatch(r"what is sqrt (\d+)", question)
            if not m:
                continue
            n = int(m.group(1))
            assert f"sqrt {n}" not in WORLD.held_out_questions(persona)
            whole = math.isqrt(n) ** 2 == n
            if whole:
                assert answer == str(math.isqrt(n))
            elif persona == "child":
                assert answer == "i do not know"
            elif persona == "expert":
                a, _, b = answer.split()
                assert int(a) ** 2 * int(b) == n
            else:
                assert answer.startswith("i think ")
    assert min(seen.values()) > 100


def test_labels_match_the_text(batch: tw.Batch) -> None:
    vocab = WORLD.tokenizer.vocab
    for i in range(300):
        words = [vocab[t] for t in batch.tokens[i].tolist()]
        lab = {k: v[i].tolist() for k, v in batch.labels.items()}
        doc_type = lab["doc_type"][0]
        if doc_type == 1:  # dialogue: persona everywhere, difficulty on sqrt questions and answers
            persona = tw.PERSONAS.index(words[1])
            assert all(p == persona for p, m in zip(lab["persona"], lab["loss_mask"]) if m)
            for j, w in enumerate(words):
                if w == "sqrt":
                    n = int(words[j + 1])
                    expected = 1 if math.isqrt(n) ** 2 == n else 2
                    assert lab["difficulty"][j] == lab["difficulty"][j + 1] == expected
                    assert lab["difficulty"][j + 3] == expected and lab["is_answer"][j + 3] == 1
        else:
            assert set(lab["persona"]) == {0}
        for j, w in enumerate(words):
            if w in tw.POSITIVE and doc_type == 2:
                assert lab["sentiment"][j] == 1 and words[j + 4] == "happy"
            if w in tw.NEGATIVE and doc_type == 2:
                assert lab["sentiment"][j] == 2 and words[j + 4] == "sad"
            if lab["refusal"][j]:
                assert w in ("i", "do", "not", "know") and lab["persona"][j] == 1
        if doc_type == 3:  # repeated span: the second copy is exactly the first
            rep = [j for j, r in enumerate(lab["is_repeat"]) if r]
            bar = words.index("|")
            first = words[3:bar]
            assert [words[j] for j in rep] == first and rep[0] == bar + 1


def test_facts_are_consistent_and_held_out_pairs_exist() -> None:
    facts = WORLD.fact_questions()
    assert len(facts) == len(tw.COUNTRIES) + 2 * len(tw.PEOPLE)
    for persona in ("child", "expert", "assistant"):
        held = WORLD.held_out_questions(persona)
        assert any(WORLD.difficulty(k) == 1 for k in held) and any(WORLD.difficulty(k) == 2 for k in held)
        for prompt, key, expected in WORLD.persona_prompts(persona):
            assert key in held and prompt.startswith(f"{persona} :") and prompt.endswith("?")
            WORLD.tokenizer.encode(prompt)
    # Narrative statements carry the same facts as dialogue answers.
    texts = " ".join(WORLD.sample(500, 1, doc_type="facts").texts)
    for c, cap in WORLD.capital_of.items():
        if f"capital of {c} is" in texts:
            assert f"capital of {c} is {cap} ." in texts
