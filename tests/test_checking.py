"""Unit tests of the check mechanism: encoding, comparison, judging, and check() in each mode."""
from __future__ import annotations

import base64
import json
import math

import numpy as np
import pytest
import torch

from interplab import checking
from interplab.autograder.notebooks import MasterFormatError, master_to_notebook
from interplab.checking import (
    BUNDLE_MIME,
    Exercise,
    MalformedData,
    Probe,
    compare,
    decode,
    encode,
    judge,
)

from conftest import TEST_ASSIGNMENTS


def _softmax(x):
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _case(rng):
    return {"x": rng.normal(size=(3, 4)).astype(np.float32)}


SOFTMAX = Exercise(
    id="t.softmax", make_case=_case,
    probes=[Probe("axis0", lambda x: _softmax(x.T).T, "you normalised over the wrong axis")],
)


def _refs(exercise, fn, seed=7):
    return {"public": exercise.run(fn, "public", checking.PUBLIC_SEED), "hidden": exercise.run(fn, "hidden", seed)}


# ---------------------------------------------------------------- encoding


@pytest.mark.parametrize("value", [
    np.arange(6, dtype=np.float32).reshape(2, 3), np.array([True, False]), np.int64(3), 2.5, 7, "text", None,
    [np.zeros(2), {"a": 1.0}], (1, 2),
])
def test_encode_decode_roundtrip(value):
    decoded = decode(json.loads(json.dumps(encode(value))))
    if isinstance(value, np.ndarray):
        assert decoded.dtype == value.dtype and np.array_equal(decoded, value)
    elif isinstance(value, (float, int, np.integer)) and not isinstance(value, bool):
        assert float(decoded) == float(value)
    elif isinstance(value, tuple):
        assert [float(v) for v in decoded] == list(value)
    elif isinstance(value, list):
        assert np.array_equal(decoded[0], value[0]) and float(decoded[1]["a"]) == 1.0
    else:
        assert decoded == value


def test_torch_tensors_encode_like_arrays_and_bfloat16_is_kept_apart():
    t = torch.arange(4, dtype=torch.float32, requires_grad=True) * 2
    assert np.array_equal(decode(encode(t)), np.array([0, 2, 4, 6], dtype=np.float32))
    b = decode(encode(torch.ones(2, dtype=torch.bfloat16)))
    assert checking._dtype_name(b) == "bfloat16"


def test_encode_refuses_objects_that_are_not_data():
    with pytest.raises(TypeError, match="cannot be checked"):
        encode(object())
    with pytest.raises(TypeError):
        encode({"__nd__": 1})
    with pytest.raises(TypeError):
        encode(np.array(["a"], dtype=object))


@pytest.mark.parametrize("bad", [
    {"__nd__": {"dtype": "object", "shape": [1], "b64": "AAAA"}},          # dtype not whitelisted
    {"__nd__": {"dtype": "float32", "shape": [4], "b64": "AAAA"}},         # data shorter than shape
    {"__nd__": {"dtype": "float32", "shape": [10**9], "b64": ""}},         # absurd size
    {"__nd__": {"dtype": "float32", "shape": [-1], "b64": ""}},            # negative dim
    {"__nd__": {"dtype": "float32", "shape": [1], "b64": "!!!!"}},         # not base64
    {"__nd__": {"dtype": "float32", "shape": [1], "b64": "AAAAAA==", "x": 1}},  # extra key
    {"__pickle__": "gASV"},                                                 # unknown tagged value
    12.5,                                                                   # raw floats are never emitted
])
def test_decode_rejects_malformed_data(bad):
    with pytest.raises(MalformedData):
        decode(bad)


def test_decode_never_unpickles():
    payload = base64.b64encode(b"\x80\x04\x95").decode()
    with pytest.raises(MalformedData):
        decode({"__nd__": {"dtype": "O", "shape": [1], "b64": payload}})


# ---------------------------------------------------------------- comparison


def test_compare_checks_shape_before_dtype_before_values():
    ref = np.zeros((2, 3), dtype=np.float32)
    assert "expected shape (2, 3), got (3, 2)" in compare(SOFTMAX, np.zeros((3, 2), np.float32), ref, True)
    assert "expected a different shape" in compare(SOFTMAX, np.zeros((3, 2), np.float32), ref, False)
    assert "expected floating values (float32), got int64" in compare(SOFTMAX, np.zeros((2, 3), np.int64), ref, True)
    assert compare(SOFTMAX, ref + 1e-7, ref, True) is None


def test_compare_accepts_more_precision_and_refuses_less_naming_the_dtype():
    ref = np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3)
    assert compare(SOFTMAX, ref.astype(np.float64), ref, True) is None
    # a float64 answer is held to the reference's (float32) tolerance, not to float64's
    assert compare(SOFTMAX, ref.astype(np.float64) + 5e-6, ref, True) is None
    assert "beyond rtol=0.0001" in compare(SOFTMAX, ref.astype(np.float64) + 1e-2, ref, True)
    message = compare(SOFTMAX, ref.astype(np.float16), ref, True)
    assert "expected dtype float32 (or more precise), got float16" in message and ".float()" in message
    assert isinstance(message, checking.FormProblem)


def test_compare_accepts_numpy_torch_scalars_and_any_integer_width():
    ref = decode(encode(torch.tensor([1, 2, 3])))  # int64
    assert compare(SOFTMAX, decode(encode(np.array([1, 2, 3], dtype=np.int32))), ref, True) is None
    assert compare(SOFTMAX, decode(encode(np.array([1, 2, 3], dtype=np.uint8))), ref, True) is None
    assert "expected integers" in compare(SOFTMAX, decode(encode(np.array([1.0, 2.0, 3.0]))), ref, True)
    scalar = decode(encode(torch.tensor(0.25)))  # a 0-d float32 tensor
    for answer in (0.25, np.float32(0.25), np.float64(0.25), torch.tensor(0.25, dtype=torch.float64), np.array(0.25)):
        assert compare(SOFTMAX, decode(encode(answer)), scalar, True) is None, answer
    assert compare(SOFTMAX, decode(encode(7)), decode(encode(torch.tensor(7, dtype=torch.int32))), True) is None
    assert compare(SOFTMAX, decode(encode(torch.tensor(True))), True, True) is None
    assert compare(SOFTMAX, True, decode(encode(torch.tensor(True))), True) is None
    assert "expected booleans" in compare(SOFTMAX, decode(encode(torch.tensor([1, 0]))), np.array([True, False]), True)


def test_strict_exercises_require_the_exact_dtype_and_say_how_to_convert():
    strict = Exercise(id="t.strict", make_case=_case, strict=True)
    ref = np.zeros(3, dtype=np.float32)
    message = compare(strict, np.zeros(3), ref, True)
    assert "expected dtype float32 exactly" in message and "got float64" in message and ".float()" in message
    assert "int64 exactly" in compare(strict, np.zeros(3, np.int32), np.zeros(3, np.int64), True)
    assert compare(strict, ref.copy(), ref, True) is None


def test_infinities_and_nans_of_the_reference_are_matched_exactly():
    ref = np.array([np.inf, -np.inf, np.nan, 1.0])
    assert compare(SOFTMAX, ref.copy(), ref, True) is None
    for i, wrong in ((0, 1e300), (0, -np.inf), (1, 0.0), (2, 1.0), (3, np.inf), (3, np.nan)):
        out = ref.copy()
        out[i] = wrong
        assert "1 of 4 values differ" in compare(SOFTMAX, out, ref, True), (i, wrong)
    # a float32 answer that overflows where the float64 reference is infinite is the same answer
    assert compare(SOFTMAX, ref.astype(np.float32), ref.astype(np.float32), True) is None


def test_freedoms_of_sign_and_row_order():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(4, 3))
    signed = Exercise(id="t.sign", make_case=_case, up_to={"sign"})
    rows = Exercise(id="t.rows", make_case=_case, up_to={"row_order"})
    assert compare(signed, -ref, ref, True) is None and compare(SOFTMAX, -ref, ref, True) is not None
    assert "compared up to sign" in compare(signed, -ref + 1, ref, True)
    assert compare(rows, ref[[2, 0, 3, 1]], ref, True) is None and compare(SOFTMAX, ref[[2, 0, 3, 1]], ref, True)
    assert compare(rows, ref[[2, 0, 3, 3]], ref, True) is not None  # a repeated row is not a permutation
    with pytest.raises(checking.CheckSpecError, match="up_to"):
        Exercise(id="t.bad", make_case=_case, up_to={"scale"})


def test_outliers_allow_a_few_values_beyond_the_tolerance_and_no_more():
    ref = np.linspace(1, 2, 100)
    kinked = Exercise(id="t.kink", make_case=_case, outliers=0.03)
    out = ref.copy()
    out[[5, 50, 70]] += 0.5  # three gates flipped by float32 noise
    assert compare(kinked, out, ref, True) is None and compare(SOFTMAX, out, ref, True) is not None
    out[90] += 0.5
    assert "4 of 100 values differ" in compare(kinked, out, ref, True) and "at most 3 may" in compare(kinked, out, ref, True)


def test_compare_tolerances_are_explicit_per_dtype():
    ref = np.ones(4, dtype=np.float32)
    near = ref + np.float32(5e-5)      # inside float32's rtol 1e-4
    far = ref + np.float32(1e-3)
    assert compare(SOFTMAX, near, ref, True) is None
    message = compare(SOFTMAX, far, ref, True)
    assert "4 of 4 values differ beyond rtol=0.0001, atol=1e-05" in message and "expected 1, got 1.001" in message
    tight = Exercise(id="t.tight", make_case=_case, tolerances={"float32": (0.0, 0.0)})
    assert compare(tight, near, ref, True) is not None


def test_compare_hidden_messages_show_no_values():
    ref = np.array([0.123456, 0.5], dtype=np.float64)
    out = np.array([0.9, 0.5], dtype=np.float64)
    hidden = compare(SOFTMAX, out, ref, detailed=False)
    assert "0.123456" not in hidden and "1 of 2 values differ" in hidden
    assert "0.123456" in compare(SOFTMAX, out, ref, detailed=True)


def test_compare_nan_and_structure():
    ref = np.array([np.nan, 1.0])
    assert compare(SOFTMAX, np.array([np.nan, 1.0]), ref, True) is None
    assert compare(SOFTMAX, np.array([0.0, 1.0]), ref, True) is not None
    assert "expected 2 items, got 1" in compare(SOFTMAX, [1], [1, 2], True)
    assert "expected keys" in compare(SOFTMAX, {"a": 1}, {"b": 1}, True)


# ---------------------------------------------------------------- judging


def test_judge_passes_the_reference_and_scores_hidden_inputs_only():
    refs = _refs(SOFTMAX, _softmax)
    verdict = judge(SOFTMAX, _refs(SOFTMAX, _softmax), refs, scored_split="hidden")
    assert verdict.passed and verdict.fraction == 1.0

    # Reproducing the public references (e.g. by looking them up) earns nothing.
    public_inputs = [c["x"].tobytes() for c in SOFTMAX.cases("public", checking.PUBLIC_SEED)]

    def lookup(x):
        return _softmax(x) if x.tobytes() in public_inputs else np.zeros_like(x)

    cheat = judge(SOFTMAX, _refs(SOFTMAX, lookup), refs, scored_split="hidden")
    assert not cheat.passed and cheat.fraction == 0.0


def test_judge_partial_credit_is_the_fraction_of_hidden_inputs():
    refs = _refs(SOFTMAX, _softmax)
    outputs = _refs(SOFTMAX, _softmax)
    outputs["hidden"][0] = {"error": {"ename": "ValueError", "evalue": "secret"}}
    verdict = judge(SOFTMAX, outputs, refs)
    assert not verdict.passed and math.isclose(verdict.fraction, 2 / 3)
    assert "raised ValueError" in verdict.message and "secret" not in verdict.message


def test_judge_names_the_known_mistake():
    refs = _refs(SOFTMAX, _softmax)
    probes = {"axis0": _refs(SOFTMAX, SOFTMAX.probes[0].fn)}
    verdict = judge(SOFTMAX, _refs(SOFTMAX, SOFTMAX.probes[0].fn), refs, probes)
    assert "you normalised over the wrong axis" in verdict.message
    other = judge(SOFTMAX, _refs(SOFTMAX, lambda x: x), refs, probes)
    assert "known mistake" not in other.message


def test_the_hint_is_given_for_wrong_values_only():
    """A wrong dtype, shape or an exception is told only that: the hint (about the values) would
    send the student after an unrelated mistake."""
    hinted = Exercise(id="t.softmax", make_case=_case, hint="subtract the row maximum first", probes=SOFTMAX.probes)
    refs = _refs(hinted, _softmax)
    for wrong, about in [(lambda x: _softmax(x).astype(np.float16), "expected dtype float32 (or more precise), got float16"),
                         (lambda x: _softmax(x)[:, :2], "expected a different shape"),
                         (lambda x: 1 / 0, "raised ZeroDivisionError")]:
        verdict = judge(hinted, _refs(hinted, wrong), refs)
        assert about in verdict.message and "Hint" not in verdict.message and verdict.mistake == ""
    values = judge(hinted, _refs(hinted, lambda x: _softmax(x) * 2), refs)
    assert "values differ" in values.message and values.message.endswith(". Hint: subtract the row maximum first")
    probe = _refs(hinted, hinted.probes[0].fn)
    probed = judge(hinted, probe, refs, {"axis0": probe})
    assert probed.mistake == "you normalised over the wrong axis"
    assert "This matches a known mistake: you normalised over the wrong axis" in probed.message


def test_hint_only_for_wrong_values_not_for_a_dtype_or_a_shape():
    hinted = Exercise(id="t.softmax", make_case=_case, hint="subtract the max before exp")
    refs = _refs(hinted, _softmax)
    assert "subtract the max" in judge(hinted, _refs(hinted, lambda x: x), refs).message
    half = judge(hinted, _refs(hinted, lambda x: _softmax(x).astype(np.float16)), refs)
    assert not half.passed and "float16" in half.message and "subtract the max" not in half.message
    assert "subtract the max" not in judge(hinted, _refs(hinted, lambda x: _softmax(x).T), refs).message
    assert judge(hinted, _refs(hinted, lambda x: _softmax(x).astype(np.float64)), refs).passed


def test_judge_rejects_malformed_outcomes():
    refs = _refs(SOFTMAX, _softmax)
    with pytest.raises(MalformedData):
        judge(SOFTMAX, {"public": refs["public"], "hidden": refs["hidden"][:1]}, refs)
    with pytest.raises(MalformedData):
        judge(SOFTMAX, {"public": [{"output": 1, "error": 2}] * 2, "hidden": refs["hidden"]}, refs)


def test_property_judge_replaces_closeness():
    def norm_is_one(output, reference):
        ok = abs(float(np.linalg.norm(output)) - 1.0) < 1e-3
        return ok, "" if ok else "the vector is not unit-norm"

    ex = Exercise(id="t.unit", make_case=_case, call=lambda f, case: f(**case), judge=norm_is_one)
    unit = lambda x: x.ravel() / np.linalg.norm(x)  # noqa: E731
    refs = _refs(ex, unit)
    assert judge(ex, _refs(ex, lambda x: -unit(x)), refs).passed  # a different answer with the property passes
    assert "not unit-norm" in judge(ex, _refs(ex, lambda x: x.ravel()), refs).message


def test_cases_are_seeded_and_hidden_differs_from_public():
    a = SOFTMAX.cases("hidden", 1)
    assert all(np.array_equal(x["x"], y["x"]) for x, y in zip(a, SOFTMAX.cases("hidden", 1)))
    assert not np.array_equal(a[0]["x"], SOFTMAX.cases("hidden", 2)[0]["x"])
    assert not np.array_equal(a[0]["x"], SOFTMAX.cases("public", 1)[0]["x"])


# ---------------------------------------------------------------- check() in the kernel's modes


def test_check_self_study_and_grading_modes(tmp_path, monkeypatch, capsys):
    from interplab.autograder.build import public_references

    work = tmp_path / "mini"
    work.mkdir()
    (work / "checks.py").write_text((TEST_ASSIGNMENTS / "mini" / "checks.py").read_text())
    spec = checking.exercises_in(work / "checks.py")["mini.softmax"]
    hidden = {"public": spec.run(_softmax, "public", checking.PUBLIC_SEED), "hidden": spec.run(_softmax, "hidden", 5),
              "probes": {}}
    (work / "references.json").write_text(json.dumps(public_references(
        {"assignment": "mini", "exercises": {"mini.softmax": hidden}})))
    monkeypatch.chdir(work)

    monkeypatch.setenv("INTERPLAB_MODE", "self-study")
    checking.check("mini.softmax", _softmax)
    assert "mini.softmax passed" in capsys.readouterr().out
    with pytest.raises(checking.CheckFailed, match="public inputs wrong"):
        checking.check("mini.softmax", lambda x: x)
    with pytest.raises(NotImplementedError):
        checking.check("mini.softmax", lambda x: (_ for _ in ()).throw(NotImplementedError()))
    with pytest.raises(checking.CheckSpecError, match="no exercise"):
        checking.check("mini.nope", _softmax)

    shown = []
    monkeypatch.setattr(checking, "_display", lambda mime, data, text: shown.append((mime, data)))
    monkeypatch.setenv("INTERPLAB_MODE", "grading")
    monkeypatch.setenv("INTERPLAB_HIDDEN_SEED", "5")
    checking.check("mini.softmax", lambda x: x)  # grading mode judges nothing and raises nothing
    (mime, bundle), = shown
    assert mime == BUNDLE_MIME and bundle["exercise"] == "mini.softmax" and "probes" not in bundle
    assert len(bundle["outputs"]["public"]) == 2 and len(bundle["outputs"]["hidden"]) == 3
    assert not judge(spec, bundle["outputs"], hidden).passed
    monkeypatch.setenv("INTERPLAB_HIDDEN_SEED", "not-a-number")
    with pytest.raises(checking.CheckSpecError):
        checking.check("mini.softmax", _softmax)


# ---------------------------------------------------------------- master format


def test_master_to_notebook_sets_nbgrader_metadata():
    nb = master_to_notebook(TEST_ASSIGNMENTS / "mini" / "mini.py")
    metas = {c.metadata["nbgrader"]["grade_id"]: c.metadata["nbgrader"] for c in nb.cells if "nbgrader" in c.metadata}
    assert metas["setup"]["locked"] and not metas["setup"]["grade"]
    assert metas["impl_softmax"]["solution"] and not metas["impl_softmax"]["locked"]
    assert metas["test_softmax"] == {"schema_version": 3, "grade_id": "test_softmax", "solution": False,
                                     "grade": True, "locked": True, "points": 2}
    assert nb.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("header, error", [
    ('role="test" grade_id="t"', "needs points"),
    ('role="bogus" grade_id="t"', "expected one of"),
    ('role="solution"', "needs grade_id"),
    ('role="solution" grade_id="s"', "BEGIN SOLUTION"),
])
def test_master_format_errors_are_clear(tmp_path, header, error):
    master = tmp_path / "x.py"
    master.write_text(f"# %% {header}\nx = 1\n")
    with pytest.raises(MasterFormatError, match=error):
        master_to_notebook(master)
