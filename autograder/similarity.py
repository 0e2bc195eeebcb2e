"""``interplab similarity ASSIGNMENT``: pairs of submissions ranked by how alike their solution cells are.

The method is winnowing (Schleimer, Wilkerson and Aiken, "Winnowing: local algorithms for document
fingerprinting", SIGMOD 2003; the algorithm behind MOSS) over normalised Python tokens, written here
rather than taken from copydetect: copydetect compares files, while our unit is the solution cells
of a notebook, each with its own released skeleton to ignore, and its report is a page of its own,
not one under our no-script policy. What the normalisation makes it robust to:

- renamed variables: every name the student's code binds (assignments, parameters, loop and
  comprehension variables, function, class and import-alias names) becomes ``V``; names it does not
  bind (``np``, ``torch``, ``len``, keyword arguments such as ``axis``) and attribute names stay, they
  are the API the code uses;
- changed comments and docstrings: comments and docstrings are dropped, other string literals become ``S``;
- layout: whitespace, blank lines and line breaks are not tokens (indentation is, as ``{``/``}``);
- reordered functions: each top-level statement of a cell (a whole function) is fingerprinted on
  its own and a submission's fingerprints are a set, so their order does not matter;
- the released skeleton: fingerprints of each solution cell as released (signature, ``raise
  NotImplementedError()``) are removed from that cell's fingerprints.

The score of a pair is the Jaccard index of their fingerprint sets, in [0, 1]. Nothing a student
wrote is executed: notebooks are read as JSON and their cells tokenised.

Writes ``course/reports/<a>-similarity.csv`` (``student_a,student_b,score``, every pair, most
similar first) and ``course/reports/<a>-similarity.html`` (each pair at or above the threshold side
by side, cell by cell, matched lines marked, all code escaped, no script).
"""
from __future__ import annotations

import argparse
import ast
import builtins
import hashlib
import io
import itertools
import keyword
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from interplab.autograder import static_page
from interplab.autograder.course import Course, CourseError
from interplab.autograder.notebooks import is_solution_cell
from interplab.autograder.store import write_atomic
from interplab.autograder.submissions import refusal
from interplab.autograder.totals import write_rows

K = 5               # tokens per k-gram: shorter runs are too common to mean anything
WINDOW = 4          # k-grams per winnowing window: any shared run of K + WINDOW - 1 tokens is found
MAX_CELL = 100_000  # characters of a cell that are read (a pasted data dump says nothing about copying)
CSV_HEADER = ["student_a", "student_b", "score"]
BUILTINS = frozenset(dir(builtins))
_SKIPPED = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.ENCODING, tokenize.ENDMARKER}


def bound_names(source: str) -> set[str] | None:
    """Names the code binds itself (its own variables), or None when it does not parse."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.alias):
            names.add(node.asname or node.name.split(".")[0])
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            names.update(node.names)
    return names


def tokens(source: str, bound: set[str] | None = None, first_line: int = 1) -> list[tuple[str, int]]:
    """The normalised tokens of ``source`` with their line numbers (``first_line`` for its first);
    ``bound`` names the student's own names (default: those ``source`` binds)."""
    bound = bound_names(source) if bound is None else bound
    raw = []
    try:
        raw.extend(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass  # keep the tokens before the error: a half-written cell still has fingerprints
    significant = [t for t in raw if t.type not in _SKIPPED or t.type == tokenize.NEWLINE]
    out: list[tuple[str, int]] = []
    for i, tok in enumerate(significant):
        before = significant[i - 1] if i else None
        after = significant[i + 1] if i + 1 < len(significant) else None
        text = tok.string
        if tok.type == tokenize.NEWLINE:
            continue
        if tok.type == tokenize.STRING:  # f-strings too (one token on Python 3.11)
            statement_start = before is None or before.type in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)
            if statement_start and (after is None or after.type == tokenize.NEWLINE):
                continue  # a docstring (or any bare string statement): prose, like a comment
            text = "S"
        elif tok.type == tokenize.NAME and not keyword.iskeyword(text) and (before is None or before.string != "."):
            own = text not in BUILTINS if bound is None else text in bound  # unparsable: every non-builtin
            text = "V" if own else text
        elif tok.type == tokenize.INDENT:
            text = "{"
        elif tok.type == tokenize.DEDENT:
            text = "}"
        out.append((text, tok.start[0] + first_line - 1))
    return out


def statements(source: str) -> list[tuple[str, int]]:
    """The top-level statements of a cell (function and class definitions whole) with their first
    line, so that reordering them changes nothing; the whole cell when it does not parse."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return [(source, 1)]
    return [(ast.get_source_segment(source, node) or "", node.lineno) for node in tree.body]


def _hash(gram: tuple[str, ...]) -> int:
    return int.from_bytes(hashlib.blake2b("\0".join(gram).encode(), digest_size=8).digest(), "big")


def fingerprints(source: str, window: int = WINDOW) -> dict[int, set[int]]:
    """Winnowed k-gram hashes of ``source`` -> the lines they cover; ``window=1`` keeps every k-gram."""
    source = source[:MAX_CELL]
    bound = bound_names(source)
    chosen: dict[int, set[int]] = {}
    for statement, first_line in statements(source):
        toks = tokens(statement, bound, first_line)
        grams = [(_hash(tuple(t for t, _ in toks[i:i + K])), toks[i][1], toks[i + K - 1][1])
                 for i in range(len(toks) - K + 1)]
        if not grams:
            continue
        for start in range(max(1, len(grams) - window + 1)):
            candidates = grams[start:start + window]
            # the rightmost minimum of the window (the paper's robust choice)
            smallest = min(range(len(candidates)), key=lambda i: (candidates[i][0], -i))
            value, first, last = candidates[smallest]
            chosen.setdefault(value, set()).update(range(first, last + 1))
    return chosen


@dataclass
class Submission:
    student: str
    cells: dict[str, str]                                    # grade id of a solution cell -> source
    prints: dict[str, dict[int, set[int]]] = field(default_factory=dict)  # grade id -> hash -> lines

    @property
    def hashes(self) -> set[tuple[str, int]]:
        return {(cell, h) for cell, prints in self.prints.items() for h in prints}


def solution_cells(path: Path) -> dict[str, str]:
    """Grade id -> source of every solution cell of a notebook (read as JSON, never run)."""
    nb = nbformat.read(path, as_version=4)
    cells = {}
    for cell in nb.cells:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if is_solution_cell(cell) and isinstance(grade_id, str):
            cells[grade_id] = str(cell.get("source", ""))
    return cells


def load_class(course: Course, assignment: str) -> tuple[list[Submission], list[str]]:
    """Every readable submission's solution cells, fingerprinted with the skeleton removed; and notes
    on submissions left out."""
    release = course.release(assignment)
    notebooks = sorted(release.glob("*.ipynb"))
    if not notebooks:
        raise CourseError(f"assignment {assignment!r} is not released in {course.root}: run `interplab build {assignment}`")
    skeleton = {f"{nb.stem}/{gid}": src for nb in notebooks for gid, src in solution_cells(nb).items()}
    skeleton_prints = skeleton_of(skeleton)
    students = sorted(p.parent.name for p in course.submitted.glob(f"*/{assignment}")) if course.submitted.is_dir() else []
    if not students:
        raise CourseError(f"no submissions found in {course.submitted}/*/{assignment}/")
    submissions, notes = [], []
    for student in students:
        folder = course.submitted / student / assignment
        refused = refusal(folder, student)
        if refused:
            notes.append(f"{student}: {refused}")
            continue
        cells: dict[str, str] = {}
        for nb in notebooks:
            try:
                found = solution_cells(folder / nb.name)
            except Exception as exc:  # a missing or broken notebook: compare what is there
                notes.append(f"{student}: {nb.name} not read ({type(exc).__name__})")
                continue
            cells.update({f"{nb.stem}/{gid}": src for gid, src in found.items() if f"{nb.stem}/{gid}" in skeleton})
        submissions.append(submission_of(student, cells, skeleton_prints))
    return submissions, notes


def skeleton_of(cells: dict[str, str]) -> dict[str, set[int]]:
    """Every k-gram of each released solution cell (not only the winnowed ones): what to ignore."""
    return {key: set(fingerprints(src, window=1)) for key, src in cells.items()}


def submission_of(student: str, cells: dict[str, str], skeleton: dict[str, set[int]]) -> Submission:
    """A student's solution cells fingerprinted, without what each cell's released skeleton has."""
    prints = {key: {h: lines for h, lines in fingerprints(src).items() if h not in skeleton.get(key, set())}
              for key, src in cells.items()}
    return Submission(student, cells, prints)


def score(a: Submission, b: Submission) -> float:
    """Jaccard index of the two fingerprint sets (0 when neither wrote anything of their own)."""
    ha, hb = a.hashes, b.hashes
    union = ha | hb
    return len(ha & hb) / len(union) if union else 0.0


def rank(submissions: list[Submission]) -> list[tuple[Submission, Submission, float]]:
    """Every pair, most similar first (ties by student ids)."""
    pairs = [(a, b, score(a, b)) for a, b in itertools.combinations(sorted(submissions, key=lambda s: s.student), 2)]
    return sorted(pairs, key=lambda p: (-p[2], p[0].student, p[1].student))


def _code(source: str, lines: set[int]) -> str:
    esc = static_page.esc
    return "<pre>" + "\n".join(f'<span class="match">{esc(line)}</span>' if i in lines else esc(line)
                               for i, line in enumerate(source.splitlines(), start=1)) + "</pre>"


def render(assignment: str, pairs: list[tuple[Submission, Submission, float]], threshold: float, notes: list[str]) -> str:
    esc = static_page.esc
    flagged = [p for p in pairs if p[2] >= threshold]
    parts = [f"<h1>Similarity: {esc(assignment)}</h1>",
             f"<p>{len(pairs)} pairs of submissions compared (winnowing over normalised tokens of the solution "
             f"cells, released skeleton removed; score = Jaccard index of the fingerprints). "
             f"{len(flagged)} pairs at or above {threshold:g} are shown side by side; marked lines hold shared "
             "fingerprints. A high score is a reason to look, not a verdict.</p>",
             static_page.table(["student a", "student b", "score"],
                               [[a.student, b.student, f"{s:.3f}"] for a, b, s in pairs[:max(len(flagged), 10)]], {2})]
    if notes:
        parts.append("<p>Left out: " + esc("; ".join(notes)) + "</p>")
    for a, b, s in flagged:
        parts.append(f"<h2>{esc(a.student)} and {esc(b.student)}: {s:.3f}</h2>")
        shared = a.hashes & b.hashes
        rows = []
        for key in sorted(set(a.cells) | set(b.cells)):
            lines_a = set().union(*[lines for h, lines in a.prints.get(key, {}).items() if (key, h) in shared])
            lines_b = set().union(*[lines for h, lines in b.prints.get(key, {}).items() if (key, h) in shared])
            rows.append(f"<tr><th colspan=2>{esc(key)}</th></tr><tr><td>{_code(a.cells.get(key, ''), lines_a)}</td>"
                        f"<td>{_code(b.cells.get(key, ''), lines_b)}</td></tr>")
        parts.append(f"<table><tr><th>{esc(a.student)}</th><th>{esc(b.student)}</th></tr>{''.join(rows)}</table>")
    return static_page.page(f"Similarity: {assignment}", "\n".join(parts))


def write_similarity(course: Course, assignment: str, threshold: float = 0.5) -> tuple[list[tuple[Submission, Submission, float]], dict[str, Path], list[str]]:
    submissions, notes = load_class(course, assignment)
    pairs = rank(submissions)
    folder = course.root / "reports"
    files = {"csv": folder / f"{assignment}-similarity.csv", "html": folder / f"{assignment}-similarity.html"}
    write_rows(files["csv"], [CSV_HEADER, *([a.student, b.student, round(s, 4)] for a, b, s in pairs)])
    write_atomic(files["html"], render(assignment, pairs, threshold, notes))
    return pairs, files, notes


def similarity_command(args: argparse.Namespace) -> int:
    if not 0 <= args.threshold <= 1:
        raise CourseError(f"--threshold must be between 0 and 1, got {args.threshold:g}")
    pairs, files, notes = write_similarity(Course.load(args.course), args.assignment, args.threshold)
    for note in notes:
        print(f"left out: {note}")
    for a, b, s in pairs[:args.top]:
        print(f"{s:.3f}  {a.student}  {b.student}")
    flagged = sum(s >= args.threshold for _, _, s in pairs)
    print(f"{len(pairs)} pairs; {flagged} at or above {args.threshold:g}; {files['csv']}; {files['html']}")
    return 0
