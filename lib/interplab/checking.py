"""One check mechanism, two modes (see ARCHITECTURE.md, "The check protocol").

A test cell calls ``check("circuits.induction_score", induction_score)``. The exercise's spec lives in
``assignments/<slug>/checks.py`` (shipped next to the notebook as ``checks.py``) and says how to make
seeded inputs, how to call the student's object on one input, and how to compare the output with
the reference (explicit tolerances, shape and dtype before values, known-wrong "probes" that name
the bug).

Modes, chosen by the ``INTERPLAB_MODE`` environment variable:

``self-study`` (default)
    Run the object on the public inputs, compare with the public references shipped as
    ``references.json`` next to ``checks.py``, print a pass line or raise :class:`CheckFailed`
    with the diagnosis.
``grading``
    Run the object on the public inputs and on hidden inputs (seed in ``INTERPLAB_HIDDEN_SEED``)
    and display the raw outputs, as data, in an output of MIME type :data:`BUNDLE_MIME`. Nothing is
    judged here: the autograder compares the bundle with hidden references in its own process.
``reference``
    Used by ``interplab build`` and ``interplab grade`` on the master notebook: like grading, plus the
    probes' outputs on the public inputs, so that the build can store the references and the
    known-wrong answers; one bundle per seed when ``INTERPLAB_HIDDEN_SEED`` lists several (each
    student's references).

Everything that leaves the kernel is JSON with arrays as base64 of raw little-endian bytes with a
whitelisted dtype: never pickle, never code.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import importlib.util
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable

import numpy as np

BUNDLE_MIME = "application/vnd.interplab.check+json"
RESULT_MIME = "application/vnd.interplab.result+json"
FORMAT_VERSION = 1
PUBLIC_SEED = 20240611  # public inputs are the same for everybody and for every build
SPLITS = ("public", "hidden")
REFERENCES_FILE = "references.json"
CHECKS_FILE = "checks.py"

# (rtol, atol) per floating dtype; integers and booleans are compared exactly.
DEFAULT_TOLERANCES: dict[str, tuple[float, float]] = {
    "float16": (1e-2, 1e-3),
    "bfloat16": (2e-2, 1e-2),
    "float32": (1e-4, 1e-5),
    "float64": (1e-7, 1e-9),
}
_ALLOWED_DTYPES = {
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "bfloat16",
}
MAX_ELEMENTS = 20_000_000  # per decoded array: a bundle cannot make the grader allocate without bound


class _OneLine:
    """An error IPython shows as its one-line message, not as a traceback through this module
    (the learner's own code is not in those frames; the message says what to change)."""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


class CheckFailed(_OneLine, AssertionError):
    """Raised in self-study mode when an exercise does not match its reference."""


class NotImplementedYet(_OneLine, NotImplementedError):
    """Raised by a check whose exercise still raises NotImplementedError."""


# Notebook error outputs name the exception's class: an unsolved exercise must still read as
# NotImplementedError there (the build's validation and `interplab check` look for that name).
NotImplementedYet.__name__ = NotImplementedYet.__qualname__ = "NotImplementedError"


class CheckSpecError(_OneLine, RuntimeError):
    """The exercise id, its spec or its references cannot be found or are malformed."""


# --------------------------------------------------------------------------------------------
# Specs (what an assignment's checks.py declares)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """A known-wrong variant of the exercise. When the student's outputs match its outputs on
    every case the student failed, feedback names the mistake with ``message``. In released
    copies of checks.py ``fn`` is None: the build keeps only the probe's outputs, as data."""

    name: str
    fn: Callable[..., Any] | None
    message: str


@dataclass(frozen=True)
class Verdict:
    exercise: str
    passed: bool
    fraction: float  # of the cases that carry points (hidden when grading, public in self-study)
    message: str
    mistake: str = ""  # the message of the known mistake (probe) the outputs matched, if any


@dataclass
class Exercise:
    """The spec of one exercise.

    ``make_case(rng)`` returns the keyword arguments of one input, drawn from ``rng`` (a seeded
    ``numpy.random.Generator``; use :func:`torch_generator` for torch). ``call(obj, case)`` runs the
    student's object on one case (default ``obj(**case)``) and returns what is compared: tensors,
    arrays, numbers, bools, strings, or lists/tuples/str-keyed dicts of those.

    ``judge`` replaces the closeness comparison for property checks (training-type exercises):
    ``judge(output, reference) -> (ok, message)`` runs in the grader's process on decoded data.

    The comparison accepts every type a correct answer may come in (numpy or torch, any integer
    width, floats at least as precise as the reference, a Python number or a 0-d tensor for a
    scalar). ``strict=True`` makes the reference's exact dtype part of the task: the exercise text
    must say so, and a failure names the conversion. ``up_to`` names the freedoms a correct answer
    has that the task does not fix: ``"sign"`` (each array may be negated as a whole: a direction)
    and ``"row_order"`` (the rows of each array may come in any order: a set of features).
    ``outliers`` is the fraction of each array's values allowed beyond the tolerance, for gradients
    through ReLUs: float32 noise of another correct evaluation order (a batch of one) flips the gate
    of a pre-activation near 0 and moves a few values by a lot. Keep it below what any known mistake
    changes.
    """

    id: str
    make_case: Callable[[np.random.Generator], dict[str, Any]]
    call: Callable[[Any, dict[str, Any]], Any] | None = None
    n_public: int = 2
    n_hidden: int = 3
    tolerances: dict[str, tuple[float, float]] = field(default_factory=dict)
    probes: list[Probe] = field(default_factory=list)
    judge: Callable[[Any, Any], tuple[bool, str]] | None = None
    hint: str = ""
    strict: bool = False
    up_to: frozenset[str] = frozenset()
    outliers: float = 0.0

    def __post_init__(self) -> None:
        if self.id.count(".") != 1:
            raise CheckSpecError(f"exercise id {self.id!r} must look like '<assignment>.<name>'")
        self.up_to = frozenset(self.up_to)
        if not self.up_to <= {"sign", "row_order"}:
            raise CheckSpecError(f"{self.id}: up_to may name 'sign' and 'row_order', got {sorted(self.up_to)}")

    @property
    def assignment(self) -> str:
        return self.id.split(".", 1)[0]

    def tolerance(self, dtype: str) -> tuple[float, float]:
        return self.tolerances.get(dtype, DEFAULT_TOLERANCES.get(dtype, (0.0, 0.0)))

    def cases(self, split: str, seed: int) -> list[dict[str, Any]]:
        n = self.n_public if split == "public" else self.n_hidden
        return [self.make_case(np.random.default_rng(_case_seed(seed, self.id, split, i))) for i in range(n)]

    def run(self, obj: Any, split: str, seed: int) -> list[dict[str, Any]]:
        """Run ``obj`` on every case of ``split``; each outcome is ``{"output": ...}`` or
        ``{"error": {"ename", "evalue"}}``, already encoded as JSON data."""
        outcomes = []
        for case in self.cases(split, seed):
            try:
                value = self.call(obj, case) if self.call is not None else obj(**case)
                outcomes.append({"output": encode(value)})
            except NotImplementedError as exc:
                outcomes.append({"error": {"ename": "NotImplementedError", "evalue": str(exc)[:300]}})
            except Exception as exc:  # the student's bug becomes feedback, not a crash
                outcomes.append({"error": {"ename": type(exc).__name__, "evalue": str(exc)[:300]}})
        return outcomes


def _case_seed(seed: int, exercise_id: str, split: str, index: int) -> int:
    digest = hashlib.sha256(f"{seed}:{exercise_id}:{split}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def torch_generator(rng: np.random.Generator):
    """A seeded ``torch.Generator`` derived from ``rng`` (for ``make_case`` functions)."""
    import torch

    return torch.Generator().manual_seed(int(rng.integers(0, 2**62)))


class Solutions:
    """The master's own solutions, for probes written as "the reference with one thing changed":
    looked up by name in the notebook's namespace (the kernel's, ``__main__`` in plain Python) unless
    a test binds another with :meth:`bind`. Probes run in the master's reference run only, where
    those names are the reference solutions."""

    def __init__(self, assignment: str) -> None:
        self.assignment = assignment
        self.namespace: dict[str, Any] | None = None

    def bind(self, namespace: dict[str, Any] | None) -> None:
        self.namespace = namespace

    def reference(self, name: str) -> Callable[..., Any]:
        namespace = self.namespace
        if namespace is None:
            try:
                from IPython import get_ipython

                shell = get_ipython()
                namespace = shell.user_ns if shell is not None else None
            except ImportError:
                pass
        fn = (namespace if namespace is not None else vars(sys.modules["__main__"])).get(name)
        if not callable(fn):
            raise CheckSpecError(f"probes of {self.assignment} need the reference {name!r}: run them from the master notebook")
        return fn

    def variant(self, name: str, **changes: Callable[[dict[str, Any]], Any]) -> Callable[..., Any]:
        """The reference ``name`` called with some arguments replaced (each change maps kwargs -> value)."""
        return lambda **kwargs: self.reference(name)(**{**kwargs, **{key: change(kwargs) for key, change in changes.items()}})

    def mapped(self, name: str, transform: Callable[[Any, dict[str, Any]], Any]) -> Callable[..., Any]:
        """The reference ``name``'s output passed through ``transform(output, kwargs)``."""
        return lambda **kwargs: transform(self.reference(name)(**kwargs), kwargs)


# --------------------------------------------------------------------------------------------
# Data encoding: JSON only, arrays as base64 with a whitelisted dtype
# --------------------------------------------------------------------------------------------


def encode(value: Any) -> Any:
    """Encode an output as JSON data. Raises TypeError for anything that is not data."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return {"__nd__": _encode_array(np.asarray(value, dtype=np.int64))}
    if isinstance(value, (float, np.floating)):
        return {"__nd__": _encode_array(np.asarray(value, dtype=np.float64 if isinstance(value, float) else value.dtype))}
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return {"__nd__": _encode_array(value)}
    if _is_torch_tensor(value):
        return {"__nd__": _encode_tensor(value)}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) and not k.startswith("__") for k in value):
            raise TypeError("dict outputs must have string keys that do not start with '__'")
        return {k: encode(v) for k, v in value.items()}
    raise TypeError(
        f"an output of type {type(value).__name__} cannot be checked; "
        "return a tensor, an array, a number, or a list/dict of those"
    )


def _is_torch_tensor(value: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _encode_tensor(tensor: Any) -> dict[str, Any]:
    import torch

    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        out = _encode_array(tensor.float().numpy())
        out["dtype_as"] = "bfloat16"
        return out
    if tensor.is_complex() or tensor.dtype not in _TORCH_DTYPES():
        raise TypeError(f"tensors of dtype {tensor.dtype} cannot be checked")
    return _encode_array(tensor.contiguous().numpy())


def _TORCH_DTYPES() -> set:
    import torch

    return {torch.bool, torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8,
            torch.float16, torch.float32, torch.float64}


def _encode_array(array: np.ndarray) -> dict[str, Any]:
    dtype = array.dtype.name
    if dtype not in _ALLOWED_DTYPES:
        raise TypeError(f"arrays of dtype {dtype} cannot be checked")
    data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return {"dtype": dtype, "shape": list(array.shape), "b64": base64.b64encode(data.tobytes()).decode("ascii")}


class MalformedData(ValueError):
    """Data that does not follow the encoding (a forged or corrupted bundle)."""


def decode(data: Any, depth: int = 0) -> Any:
    """Inverse of :func:`encode`, strict: anything unexpected raises :class:`MalformedData`."""
    if depth > 32:
        raise MalformedData("nested too deeply")
    if data is None or isinstance(data, (bool, str)):
        return data
    if isinstance(data, list):
        return [decode(v, depth + 1) for v in data]
    if isinstance(data, dict):
        if set(data) == {"__nd__"}:
            return _decode_array(data["__nd__"])
        if any(not isinstance(k, str) or k.startswith("__") for k in data):
            raise MalformedData("unexpected key in output")
        return {k: decode(v, depth + 1) for k, v in data.items()}
    raise MalformedData(f"unexpected value of type {type(data).__name__}")


def _decode_array(spec: Any) -> np.ndarray:
    if not isinstance(spec, dict) or not {"dtype", "shape", "b64"} <= set(spec) or set(spec) - {"dtype", "shape", "b64", "dtype_as"}:
        raise MalformedData("array without dtype, shape and data")
    dtype, shape, b64 = spec["dtype"], spec["shape"], spec["b64"]
    if dtype not in _ALLOWED_DTYPES or dtype == "bfloat16":
        raise MalformedData(f"dtype {dtype!r} is not allowed")
    if not isinstance(shape, list) or len(shape) > 16 or not all(isinstance(d, int) and 0 <= d for d in shape):
        raise MalformedData("bad shape")
    count = math.prod(shape)
    if count > MAX_ELEMENTS:
        raise MalformedData("array too large")
    if not isinstance(b64, str):
        raise MalformedData("array data is not a string")
    np_dtype = np.dtype(dtype).newbyteorder("<")
    if len(b64) != 4 * math.ceil(count * np_dtype.itemsize / 3):
        raise MalformedData("array data does not match its shape")
    try:
        raw = base64.b64decode(b64, validate=True)
    except ValueError as exc:
        raise MalformedData("array data is not base64") from exc
    if len(raw) != count * np_dtype.itemsize:
        raise MalformedData("array data does not match its shape")
    array = np.frombuffer(raw, dtype=np_dtype).reshape(shape).astype(np_dtype.newbyteorder("="))
    if spec.get("dtype_as") == "bfloat16":
        array = array.astype(np.float32)
        return _Bfloat16(array)
    return array


class _Bfloat16(np.ndarray):
    """A float32 array that remembers it was bfloat16 (numpy has no bfloat16)."""

    def __new__(cls, array: np.ndarray) -> "_Bfloat16":
        return np.asarray(array).view(cls)


def _dtype_name(array: np.ndarray) -> str:
    return "bfloat16" if isinstance(array, _Bfloat16) else array.dtype.name


# --------------------------------------------------------------------------------------------
# Comparison and judging (same code in the self-study kernel and in the grader's process)
# --------------------------------------------------------------------------------------------


class ValueProblem(str):
    """A problem with the values themselves (right structure, shape and dtype): the only kind of
    failure the exercise's hint is about."""


class FormProblem(str):
    """A failure of type, structure or shape alone (not of values): its message says only what to
    change, so judging adds no hint about an unrelated mistake."""


# Floating dtypes from least to most precise: an output at least as precise as the reference passes
# when it matches at the reference's tolerance.
_FLOAT_PRECISION = {"bfloat16": 0, "float16": 1, "float32": 2, "float64": 3}
_CONVERSION = {"float16": ".half() / .astype(np.float16)", "bfloat16": ".bfloat16()",
               "float32": ".float() / .astype(np.float32)", "float64": ".double() / .astype(np.float64)",
               "bool": ".bool() / .astype(bool)"}


def _dtype_problem(exercise: Exercise, out_dtype: str, ref_dtype: str, ref_kind: str, out_kind: str) -> str | None:
    """The comparison policy for dtypes (README, "How the checks work"): unless the exercise is
    ``strict``, any integer width passes for integers and any floating dtype at least as precise as
    the reference passes for floats; booleans stay booleans."""
    if exercise.strict:
        if out_dtype == ref_dtype:
            return None
        change = _CONVERSION.get(ref_dtype, f".to({ref_dtype})")
        return f"expected dtype {ref_dtype} exactly (this exercise makes the dtype part of the task), got {out_dtype}: convert with {change}"
    if ref_kind in "iu" and out_kind in "iu":
        return None
    if ref_kind == "f" and out_kind == "f":
        if _FLOAT_PRECISION[out_dtype] >= _FLOAT_PRECISION[ref_dtype]:
            return None
        return f"expected dtype {ref_dtype} (or more precise), got {out_dtype}: compute or convert with {_CONVERSION[ref_dtype]}"
    if ref_kind == "b" and out_kind == "b":
        return None
    wanted = {"f": f"floating values ({ref_dtype})", "b": "booleans", "i": "integers", "u": "integers"}[ref_kind]
    change = f"convert with {_CONVERSION[ref_dtype]}" if ref_dtype in _CONVERSION else "return integers, e.g. with .long() / .astype(np.int64)"
    return f"expected {wanted}, got {out_dtype}: {change}"


def _as_bool_array(value: Any) -> Any:
    """A Python bool where a 0-d boolean tensor is expected (or the reverse) is the same answer."""
    return np.asarray(value) if isinstance(value, bool) else value


def compare(exercise: Exercise, output: Any, reference: Any, detailed: bool, path: str = "output") -> str | None:
    """None when ``output`` matches ``reference``; otherwise what is wrong, in one sentence.

    Structure first, then shape, then dtype (see :func:`_dtype_problem`), then values: floats at the
    reference dtype's tolerance, infinities and NaNs exactly, everything else exactly; up to a sign
    or an order of rows where the exercise says so (``up_to``). With ``detailed=False`` (hidden
    inputs) the message never contains a reference value or an input. Failures of type, structure
    or shape alone are :class:`FormProblem` messages."""
    if isinstance(reference, bool) and isinstance(output, np.ndarray) and output.shape == () and output.dtype.kind == "b":
        output = bool(output)
    if isinstance(reference, np.ndarray):
        output = _as_bool_array(output) if reference.dtype.kind == "b" else output
        if not isinstance(output, np.ndarray):
            return FormProblem(f"{path} should be a tensor/array, got {_kind(output)}")
        if output.shape != reference.shape:
            expected = f"expected shape {tuple(reference.shape)}, " if detailed else "expected a different shape, "
            return FormProblem(f"{path}: {expected}got {tuple(output.shape)}")
        ref_dtype, out_dtype = _dtype_name(reference), _dtype_name(output)
        problem = _dtype_problem(exercise, out_dtype, ref_dtype, reference.dtype.kind, output.dtype.kind)
        if problem:
            return FormProblem(f"{path}: {problem}")
        rtol, atol = exercise.tolerance(ref_dtype)
        bad = _mismatch(reference, output, rtol, atol)
        if bad.any() and "sign" in exercise.up_to and reference.dtype.kind == "f":
            flipped = _mismatch(reference, -output, rtol, atol)
            bad = flipped if flipped.sum() < bad.sum() else bad
        if bad.any() and "row_order" in exercise.up_to and reference.ndim >= 1:
            bad = _mismatch(reference, output[_row_matching(reference, output)], rtol, atol)
        n_bad = int(np.count_nonzero(bad))
        if n_bad <= int(exercise.outliers * bad.size):
            return None
        where = f"{n_bad} of {bad.size} values differ"
        if reference.dtype.kind == "f":
            where += f" beyond rtol={rtol:g}, atol={atol:g}"
        if exercise.up_to:
            where += f" (compared up to {' and '.join(sorted(exercise.up_to))})"
        if exercise.outliers:
            where += f" (at most {int(exercise.outliers * bad.size)} may)"
        if detailed:
            index = tuple(int(i) for i in np.argwhere(bad)[0]) if bad.ndim else ()
            where += f"; first at index {index}: expected {_scalar(reference[index])}, got {_scalar(output[index])}"
        return ValueProblem(f"{path}: {where}")
    if isinstance(reference, list):
        if not isinstance(output, list):
            return FormProblem(f"{path} should be a list/tuple, got {_kind(output)}")
        if len(output) != len(reference):
            return FormProblem(f"{path}: expected {len(reference)} items, got {len(output)}")
        for i, (o, r) in enumerate(zip(output, reference)):
            problem = compare(exercise, o, r, detailed, f"{path}[{i}]")
            if problem:
                return problem
        return None
    if isinstance(reference, dict):
        if not isinstance(output, dict):
            return FormProblem(f"{path} should be a dict, got {_kind(output)}")
        if set(output) != set(reference):
            return FormProblem(f"{path}: expected keys {sorted(reference)}, got {sorted(output)}")
        for key in reference:
            problem = compare(exercise, output[key], reference[key], detailed, f"{path}[{key!r}]")
            if problem:
                return problem
        return None
    if type(output) is not type(reference):
        return FormProblem(f"{path} should be {_kind(reference)}, got {_kind(output)}")
    if output != reference:
        shown = f"expected {reference!r}, got {output!r}" if detailed else f"got {output!r}, which is wrong"
        return ValueProblem(f"{path}: {shown}")
    return None


def _mismatch(reference: np.ndarray, output: np.ndarray, rtol: float, atol: float) -> np.ndarray:
    """Where ``output`` differs from ``reference``: floats beyond the tolerance, and a NaN or an
    infinity of the reference matched only by the same NaN or infinity (never by a finite value)."""
    if reference.dtype.kind != "f":
        return np.asarray(output != reference)
    out64, ref64 = output.astype(np.float64), reference.astype(np.float64)
    finite = np.isfinite(ref64) & np.isfinite(out64)
    with np.errstate(invalid="ignore", over="ignore"):
        close = np.abs(out64 - ref64) <= atol + rtol * np.abs(ref64)
    same_special = (np.isnan(out64) & np.isnan(ref64)) | (np.isinf(ref64) & (out64 == ref64))
    return ~np.where(finite, close, same_special)


def _row_matching(reference: np.ndarray, output: np.ndarray) -> np.ndarray:
    """The order of ``output``'s rows (first axis) closest to ``reference``'s (a one-to-one
    assignment minimising the total absolute difference), for outputs whose order is free."""
    from scipy.optimize import linear_sum_assignment

    ref = reference.reshape(len(reference), -1).astype(np.float64)
    out = output.reshape(len(output), -1).astype(np.float64)
    cost = np.nan_to_num(np.abs(ref[:, None, :] - out[None, :, :]).sum(-1), nan=1e300, posinf=1e300)
    _, columns = linear_sum_assignment(cost)
    return columns


def _scalar(value: Any) -> str:
    item = np.asarray(value).item()
    return f"{item:.6g}" if isinstance(item, float) else repr(item)


def _kind(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {tuple(value.shape)}"
    return type(value).__name__


def _outcome_problem(exercise: Exercise, outcome: Any, reference: Any, detailed: bool) -> str | None:
    """Compare one encoded outcome with one encoded reference outcome."""
    if not isinstance(outcome, dict) or len(outcome) != 1 or not ({"output", "error"} & set(outcome)):
        raise MalformedData("outcome must be {'output': ...} or {'error': ...}")
    if "error" in outcome:
        err = outcome["error"]
        if not isinstance(err, dict):
            raise MalformedData("bad error outcome")
        ename = str(err.get("ename", "Exception"))[:80]
        if ename == "NotImplementedError":
            return "not implemented yet (raised NotImplementedError)"
        if detailed:
            return f"raised {ename}: {str(err.get('evalue', ''))[:300]}"
        return f"raised {ename}"
    output = decode(outcome["output"])
    ref = decode(reference["output"])
    if exercise.judge is not None:
        ok, message = exercise.judge(output, ref)
        return None if ok else ValueProblem(message)
    return compare(exercise, output, ref, detailed)


def judge(
    exercise: Exercise,
    outputs: dict[str, list[Any]],
    references: dict[str, list[Any]],
    probes: dict[str, dict[str, list[Any]]] | None = None,
    scored_split: str = "hidden",
) -> Verdict:
    """Judge a student's outcomes against reference outcomes, split by split.

    The fraction of credit comes from ``scored_split`` only (hidden inputs when grading), so an
    answer that reproduces the public references earns nothing. Public failures are reported in
    detail (the public references are public anyway); hidden ones never show a value."""
    messages: list[str] = []
    all_problems: list[str | None] = []
    fraction = 0.0
    failed_cases: dict[str, list[int]] = {}
    for split in SPLITS:
        if split not in references:
            continue
        refs = references[split]
        outs = outputs.get(split)
        if not isinstance(outs, list) or len(outs) != len(refs):
            raise MalformedData(f"expected {len(refs)} {split} outcomes")
        problems = [_outcome_problem(exercise, o, r, detailed=(split == "public")) for o, r in zip(outs, refs)]
        all_problems += problems
        failed = [i for i, p in enumerate(problems) if p]
        failed_cases[split] = failed
        if failed:
            first = failed[0]
            label = f"{split} input {first + 1}" if split == "public" else f"hidden input {first + 1}"
            messages.append(f"{len(failed)} of {len(refs)} {split} inputs wrong ({label}: {problems[first]})")
        if split == scored_split:
            fraction = (len(refs) - len(failed)) / len(refs) if refs else 0.0
    passed = not any(failed_cases.values())
    mistake = _diagnose(exercise, outputs, probes, failed_cases) if not passed and probes else None
    if mistake:
        messages.append(f"This matches a known mistake: {mistake}")
    # the hint is about getting the values right: it would mislead on a wrong shape, dtype or an error
    hint = f". Hint: {exercise.hint}" if exercise.hint and any(isinstance(p, ValueProblem) for p in all_problems) else ""
    message = "; ".join(messages) + hint if messages else "all inputs match the reference"
    return Verdict(exercise.id, passed, fraction, message, mistake or "")


def _diagnose(exercise: Exercise, outputs: dict[str, list[Any]], probes: dict[str, dict[str, list[Any]]],
              failed_cases: dict[str, list[int]]) -> str | None:
    """The message of the first probe whose outputs equal the student's on every failed input of the
    splits it has outputs for (at least one). Reference runs compute probes on the public inputs
    only: a known mistake shows there too, and probes on every student's hidden inputs cost most of
    a reference run, for a message, not a score."""
    by_name = {p.name: p for p in exercise.probes}
    for name, probe_outputs in probes.items():
        probe = by_name.get(name)
        if probe is None:
            continue
        matched = 0
        for split, failed in failed_cases.items():
            if split not in probe_outputs:
                continue
            for i in failed:
                try:
                    ref = probe_outputs[split][i]
                    if "output" in ref and "output" in outputs[split][i] and \
                            _outcome_problem(_without_judge(exercise), outputs[split][i], ref, False) is None:
                        matched += 1
                    else:
                        matched = -10**6
                except (KeyError, IndexError, MalformedData):
                    matched = -10**6
        if matched > 0:
            return probe.message
    return None


def _without_judge(exercise: Exercise) -> Exercise:
    return exercise if exercise.judge is None else dataclasses.replace(exercise, judge=None)


# --------------------------------------------------------------------------------------------
# Finding specs and references
# --------------------------------------------------------------------------------------------

_SPEC_CACHE: dict[Path, ModuleType] = {}


def load_spec_module(path: Path) -> ModuleType:
    """Import a ``checks.py`` by path (our own code from the course, never a submission's copy)."""
    path = Path(path).resolve()
    if path in _SPEC_CACHE:
        return _SPEC_CACHE[path]
    name = f"interplab_checks_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CheckSpecError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    if not isinstance(getattr(module, "EXERCISES", None), list):
        raise CheckSpecError(f"{path} defines no EXERCISES list")
    _SPEC_CACHE[path] = module
    return module


def exercises_in(path: Path) -> dict[str, Exercise]:
    module = load_spec_module(path)
    found = {ex.id: ex for ex in module.EXERCISES}
    if len(found) != len(module.EXERCISES):
        raise CheckSpecError(f"{path} declares an exercise id twice")
    return found


def find_assignment_dir(assignment: str) -> Path:
    """Where the ``checks.py`` of ``assignment`` lives: ``$INTERPLAB_ASSIGNMENT_DIR``, else the
    working directory (a notebook runs in its own folder), else its parents (a student who keeps
    notebooks in a subfolder)."""
    candidates = []
    if os.environ.get("INTERPLAB_ASSIGNMENT_DIR"):
        candidates.append(Path(os.environ["INTERPLAB_ASSIGNMENT_DIR"]))
    cwd = Path.cwd()
    candidates += [cwd, *cwd.parents[:2]]
    for directory in candidates:
        path = directory / CHECKS_FILE
        if path.is_file() and getattr(load_spec_module(path), "ASSIGNMENT", None) == assignment:
            return directory
    raise CheckSpecError(
        f"cannot find the checks of assignment {assignment!r}: expected {CHECKS_FILE} next to the notebook "
        f"(working directory {cwd}). Open the notebook from its assignment folder, or set INTERPLAB_ASSIGNMENT_DIR."
    )


def find_exercise(exercise_id: str) -> tuple[Exercise, Path]:
    if not isinstance(exercise_id, str) or exercise_id.count(".") != 1:
        raise CheckSpecError(f"exercise id {exercise_id!r} must look like '<assignment>.<name>'")
    directory = find_assignment_dir(exercise_id.split(".")[0])
    exercises = exercises_in(directory / CHECKS_FILE)
    if exercise_id not in exercises:
        raise CheckSpecError(f"no exercise {exercise_id!r} in {directory / CHECKS_FILE}; known: {sorted(exercises)}")
    return exercises[exercise_id], directory


def load_references(directory: Path) -> dict[str, Any]:
    path = Path(directory) / REFERENCES_FILE
    if not path.is_file():
        raise CheckSpecError(
            f"no public references at {path}. They are made by `interplab build`: "
            "open the notebook from the released (or built source) folder."
        )
    return json.loads(path.read_text())


# --------------------------------------------------------------------------------------------
# The function students call
# --------------------------------------------------------------------------------------------


def mode() -> str:
    value = os.environ.get("INTERPLAB_MODE", "self-study")
    if value not in ("self-study", "grading", "reference"):
        raise CheckSpecError(f"INTERPLAB_MODE={value!r}: expected self-study, grading or reference")
    return value


def _display(mime: str, data: dict[str, Any], text: str) -> None:
    try:
        from IPython.display import display

        display({mime: data, "text/plain": text}, raw=True)
    except ImportError:  # plain Python: nothing to display to
        pass


def check(exercise_id: str, obj: Any) -> None:
    """Check ``obj`` (usually your function) against exercise ``exercise_id``.

    Self-study: prints one pass line, or raises :class:`CheckFailed` saying what is wrong.
    Grading: hands the raw outputs to the autograder and judges nothing."""
    current = mode()
    exercise, directory = find_exercise(exercise_id)
    if current == "self-study":
        _check_self_study(exercise, directory, obj)
        return None
    seeds = _hidden_seeds(current)
    public = exercise.run(obj, "public", PUBLIC_SEED)
    probes_public: dict[str, list[Any]] = {}
    for seed in seeds:
        bundle: dict[str, Any] = {"version": FORMAT_VERSION, "exercise": exercise.id,
                                  "outputs": {"public": public, "hidden": exercise.run(obj, "hidden", seed)}}
        if current == "reference":
            for p in exercise.probes:  # public outputs once, after the first seed's run (as a single run does)
                probes_public.setdefault(p.name, exercise.run(p.fn, "public", PUBLIC_SEED))
            bundle["seed"] = seed  # probes on public inputs only: a mistake is named from those (see _diagnose)
            bundle["probes"] = {p.name: {"public": probes_public[p.name]} for p in exercise.probes}
        _display(BUNDLE_MIME, bundle, f"<interplab check data for {exercise.id}>")
    # Re-raise the first error so the notebook shows it (and the build's validation can see it).
    for outcome in public:
        if "error" in outcome:
            err = outcome["error"]
            if err["ename"] == "NotImplementedError":
                raise NotImplementedYet(err["evalue"] or f"{exercise.id} is not implemented yet")
            raise CheckFailed(f"{exercise.id}: raised {err['ename']}: {err['evalue']}")
    return None


def _hidden_seeds(current: str) -> list[int]:
    """The hidden seed (grading) or seeds (reference: one run of the master computes the references
    of several students, ``INTERPLAB_HIDDEN_SEED=s1,s2,...``)."""
    value = os.environ.get("INTERPLAB_HIDDEN_SEED", "")
    seeds = value.split(",")
    if not value or not all(s.isdigit() for s in seeds) or (current == "grading" and len(seeds) != 1):
        raise CheckSpecError(f"INTERPLAB_MODE={current} needs INTERPLAB_HIDDEN_SEED (one seed; several, "
                             f"comma-separated, in reference mode), not {value!r}")
    return [int(s) for s in seeds]


def _check_self_study(exercise: Exercise, directory: Path, obj: Any) -> Verdict:
    references = load_references(directory).get("exercises", {}).get(exercise.id)
    if references is None:
        raise CheckSpecError(f"{directory / REFERENCES_FILE} has no reference for {exercise.id}; rebuild the assignment")
    outputs = {"public": exercise.run(obj, "public", PUBLIC_SEED)}
    verdict = judge(exercise, outputs, {"public": references["public"]},
                    {name: {"public": outs} for name, outs in references.get("probes", {}).items()},
                    scored_split="public")
    _display(RESULT_MIME, {"exercise": exercise.id, "passed": verdict.passed, "message": verdict.message},
             f"{exercise.id}: {'passed' if verdict.passed else 'failed'}")
    if not verdict.passed:
        if all("error" in o and o["error"]["ename"] == "NotImplementedError" for o in outputs["public"]):
            raise NotImplementedYet(f"{exercise.id}: not implemented yet")
        raise CheckFailed(f"{exercise.id}: {verdict.message}")
    print(f"\u2714 {exercise.id} passed ({len(outputs['public'])} of {len(outputs['public'])} inputs match).")
    return verdict


def iter_bundles(outputs: Iterable[Any], mime: str = BUNDLE_MIME) -> Iterable[Any]:
    """The payloads of ``mime`` in a cell's outputs (display_data or execute_result)."""
    for output in outputs:
        if output.get("output_type") in ("display_data", "execute_result") and mime in output.get("data", {}):
            yield output["data"][mime]
