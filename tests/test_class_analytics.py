"""A semester's instructor tools on one planted class of 20 `mini` submissions, graded once by the
real `interplab grade` (real nbgrader, real sandboxed kernels): the class report's exact counts
(`interplab report`), the similarity ranking with disguised copies among independent solutions
(`interplab similarity`), the LMS gradebooks (`interplab export`), and both pages opened in real
headless Chromium (no script runs, the numbers are there)."""
from __future__ import annotations

import ast
import csv
from pathlib import Path

import pytest

from interplab.autograder import similarity

from conftest import TEST_ASSIGNMENTS, edit_solution, interplab, make_course

pytest_plugins = ["hub_fixtures"]  # chromium, browser

# cell_timeout small so the planted sleeper costs seconds; 3GiB is the least the fork server takes
LIMITS = {"cell_timeout": "10", "notebook_timeout": "90", "memory_limit": '"3GiB"'}
PAYLOAD = '# </pre><script>document.title = "PWNED"</script>\n'

# Six independent correct solutions, each written its own way.
CORRECT = {
    "ind_plain": (
        "def softmax(x):\n    shifted = x - x.max(axis=-1, keepdims=True)\n    e = np.exp(shifted)\n"
        "    return e / e.sum(axis=-1, keepdims=True)\n",
        "def row_norms(x):\n    return np.linalg.norm(x, axis=1)\n"),
    "ind_loops": (
        "def _stable_exp(row):\n    # exponentiate after removing the row maximum (no overflow)\n"
        "    biggest = row[0]\n    for value in row:\n        if value > biggest:\n            biggest = value\n"
        "    return [np.exp(value - biggest) for value in row]\n\n"
        "def softmax(x):\n    out = np.empty_like(x)\n    for i in range(x.shape[0]):\n"
        "        weights = _stable_exp(x[i])\n        total = sum(weights)\n"
        "        for j in range(x.shape[1]):\n            out[i, j] = weights[j] / total\n    return out\n",
        "def row_norms(x):\n    result = []\n    for row in x:\n        acc = 0.0\n        for value in row:\n"
        "            acc += float(value) * float(value)\n        result.append(acc ** 0.5)\n    return np.array(result)\n"),
    "ind_lse": (
        "def softmax(x):\n    m = np.max(x, axis=1, keepdims=True)\n"
        "    log_normaliser = m + np.log(np.sum(np.exp(x - m), axis=1, keepdims=True))\n"
        "    return np.exp(x - log_normaliser)\n",
        "def row_norms(x):\n    return np.sqrt(np.einsum('ij,ij->i', x, x))\n"),
    "ind_torch": (
        "import torch\n\ndef softmax(x):\n    return torch.softmax(torch.from_numpy(x), dim=-1).numpy()\n",
        "import torch\n\ndef row_norms(x):\n    return torch.from_numpy(x).norm(dim=1).numpy()\n"),
    "ind_transpose": (
        "def softmax(x):\n    z = x.T - x.max(axis=1)\n    w = np.exp(z)\n    return (w / w.sum(axis=0)).T\n",
        "def row_norms(x):\n    return np.sqrt(np.square(x).sum(-1))\n"),
    "ind_math": (
        "import math\n\ndef softmax(x):\n    probs = np.zeros(x.shape)\n    for r, values in enumerate(x.astype(np.float64)):\n"
        "        top = max(values)\n        ex = [math.exp(v - top) for v in values]\n        s = math.fsum(ex)\n"
        "        probs[r] = [e / s for e in ex]\n    return probs\n",
        "import math\n\ndef row_norms(x):\n    return np.array([math.hypot(*row) for row in x])\n"),
}
# Disguised copies: variables renamed, functions reordered, comments changed, layout changed.
COPIES = {  # the functions keep their signatures (the checks call them with keyword `x`)
    "copy_loops": ("ind_loops", (
        "def softmax(x):\n" + PAYLOAD.replace("#", "    #") + "    probabilities = np.empty_like(x)\n"
        "    for r in range(x.shape[0]):\n        exps = _row_exponentials(x[r])\n"
        "        denom = sum(exps)\n        for c in range(x.shape[1]):\n"
        "            probabilities[r, c] = exps[c] / denom\n    return probabilities\n\n\n"
        "def _row_exponentials(vec):\n    # find the largest entry first\n    mx = vec[0]\n    for item in vec:\n"
        "        if item > mx:\n            mx = item\n    return [np.exp(item - mx) for item in vec]\n",
        "def row_norms(x):\n    norms = []\n    for vec in x:\n        running = 0.0\n        for item in vec:\n"
        "            running += float(item) * float(item)  # sum of squares\n        norms.append(running ** 0.5)\n"
        "    return np.array(norms)\n")),
    "copy_lse": ("ind_lse", (
        'def softmax(x):\n    """Softmax via the log-sum-exp trick."""\n    peak = np.max(x, axis=1, keepdims=True)\n'
        "    lse = peak + np.log(np.sum(np.exp(x - peak),\n                               axis=1, keepdims=True))\n"
        "    return np.exp(x - lse)\n",
        "def row_norms(x):\n    # Euclidean norm per row\n    return np.sqrt(np.einsum('ij,ij->i', x, x))\n")),
}
# Known mistakes (the probes `axis0` and `squared`), each written its own way.
MISTAKES = {
    "axis0_a": ("def softmax(x):\n    e = np.exp(x - x.max(axis=0, keepdims=True))\n    return e / e.sum(axis=0, keepdims=True)\n",
                "def row_norms(x):\n    return np.sqrt(np.sum(x * x, axis=1))\n"),
    "axis0_b": ("def softmax(x):\n    res = np.zeros_like(x)\n    for j in range(x.shape[1]):\n        col = x[:, j]\n"
                "        ex = np.exp(col - col.max())\n        res[:, j] = ex / ex.sum()\n    return res\n",
                "def row_norms(x):\n    return (x ** 2).sum(1) ** 0.5\n"),
    "axis0_c": ("def softmax(x):\n    return np.apply_along_axis(lambda c: np.exp(c) / np.exp(c).sum(), 0, x)\n",
                "def row_norms(x):\n    return np.array([np.sqrt(np.dot(r, r)) for r in x])\n"),
    "squared_a": ("def softmax(x):\n    return np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)\n",
                  "def row_norms(x):\n    return np.sum(x ** 2, axis=-1)\n"),
    "squared_b": ("def softmax(x):\n    a = np.asarray(x, dtype=np.float64)\n    a = a - a.max(-1)[:, None]\n"
                  "    return np.exp(a) / np.exp(a).sum(-1)[:, None]\n",
                  "def row_norms(x):\n    return np.array([row @ row for row in x])\n"),
    "both_wrong": ("def softmax(x):\n    return np.exp(x) / np.exp(x).sum(0)\n",
                   "def row_norms(x):\n    return (x * x).sum(axis=1)\n"),
}
# Runs that hit a limit, unknown mistakes, and work not done.
OTHERS = {
    "died": ("import os\nos._exit(1)\n", None),
    "slow": ("import time\ntime.sleep(600)\n", None),
    "hog": ("hog = bytearray(8 * 2**30)\n", None),
    "untouched": (None, None),
    "identity": ("def softmax(x):\n    return x\n", "def row_norms(x):\n    return np.abs(x).sum(axis=1)\n"),
    "half_done": (None, "def row_norms(x):\n    return np.hypot.reduce(x, axis=1)\n"),
}
CLASS = {**CORRECT, **{name: cells for name, (_, cells) in COPIES.items()}, **MISTAKES, **OTHERS}


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> Path:
    course = make_course(tmp_path_factory.mktemp("analytics"), TEST_ASSIGNMENTS)
    toml = course / "course.toml"
    toml.write_text("\n".join(f"{line.split('=')[0].strip()} = {LIMITS[line.split('=')[0].strip()]}"
                              if line.split("=")[0].strip() in LIMITS else line for line in toml.read_text().splitlines()) + "\n")
    interplab("build", "--course", str(course), "mini", "--skip-validation", check=True)
    release = course / "release" / "mini" / "mini.ipynb"
    for student, (softmax, norms) in CLASS.items():
        cells = {k: v for k, v in (("impl_softmax", softmax), ("impl_row_norms", norms)) if v is not None}
        target = course / "submitted" / student / "mini" / "mini.ipynb"
        if cells:
            edit_solution(release, cells, target)
        else:
            target.parent.mkdir(parents=True)
            target.write_bytes(release.read_bytes())
    assert len(CLASS) == 20
    interplab("grade", "mini", "--course", str(course), check=True)
    return course


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


@pytest.mark.slow
def test_report_counts_every_planted_mistake(graded):
    proc = interplab("report", "mini", "--course", str(graded), "--threshold", "60", check=True)
    assert "20 students" in proc.stdout
    reports = graded / "reports"
    assert _rows(reports / "mini-misconceptions.csv") == [
        ["exercise_id", "probe", "students"], ["mini.softmax", "axis0", "4"], ["mini.row_norms", "squared", "3"]]
    exercises = {r[0]: r[1:] for r in _rows(reports / "mini-exercises.csv")[1:]}
    # softmax: 6 independent + 2 copies + squared_a, squared_b; row norms: 6 + 2 + axis0_a/b/c + half_done
    assert exercises["mini.softmax"][:3] == ["20", "10", "0.5"]
    assert exercises["mini.row_norms"][:3] == ["20", "12", "0.6"]
    students = {r[0]: r[1:] for r in _rows(reports / "mini.csv")[1:]}
    assert len(students) == 20
    assert {s: row[4] for s, row in students.items() if row[4]} == {"died": "kernel death", "slow": "time limit",
                                                                  "hog": "memory"}
    # 60% of 3 points: softmax (2 points) alone is enough; row norms (1 point) alone is not
    below = sorted(s for s, row in students.items() if row[3] == "1")
    assert below == sorted(["axis0_a", "axis0_b", "axis0_c", "both_wrong", "died", "slow", "hog", "untouched",
                            "identity", "half_done"])
    assert students["ind_math"][:3] == ["3", "3", "100.0"] and students["axis0_a"][:3] == ["1", "3", "33.3"]


@pytest.mark.slow
def test_similarity_ranks_disguised_copies_first(graded):
    proc = interplab("similarity", "mini", "--course", str(graded), check=True)
    assert "190 pairs" in proc.stdout
    rows = _rows(graded / "reports" / "mini-similarity.csv")
    assert rows[0] == ["student_a", "student_b", "score"] and len(rows) == 1 + 190
    scores = [float(r[2]) for r in rows[1:]]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    copies = {tuple(sorted((copy, original))) for copy, (original, _) in COPIES.items()}
    assert {tuple(r[:2]) for r in rows[1:3]} == copies, rows[1:6]
    independent = max(float(r[2]) for r in rows[1:] if tuple(r[:2]) not in copies)
    assert min(float(r[2]) for r in rows[1:3]) > independent


def test_similarity_is_blind_to_names_order_comments_and_skeleton():
    original = "def f(a):\n    # first\n    b = a * 2\n    return helper(b) + 1\n\ndef helper(c):\n    return np.sum(c ** 2)\n"
    disguised = ('def helper(values):\n    """sum of squares"""\n    return np.sum(values ** 2)\n\n\n'
                 "def f(inp):\n    doubled = inp * 2  # twice\n    return helper(doubled) + 1\n")
    assert set(similarity.fingerprints(original)) == set(similarity.fingerprints(disguised))
    other = "def f(a):\n    return sum(x * x for x in a * 2) + 1\n"
    assert set(similarity.fingerprints(original)) != set(similarity.fingerprints(other))
    assert similarity.tokens("def f(x:\n    'unterminated")  # a broken cell still has tokens, no error


@pytest.mark.slow
def test_reports_run_no_script_and_show_the_numbers(graded, browser):
    interplab("report", "mini", "--course", str(graded), "--threshold", "60", check=True)
    interplab("similarity", "mini", "--course", str(graded), check=True)
    browser.get((graded / "reports" / "mini.html").as_uri())
    assert browser.title == "Class report: mini"
    assert browser.execute_script("return document.scripts.length") == 0
    text = browser.find_element("tag name", "body").text
    assert "axis0" in text and "squared" in text and "kernel death: 1" in text and "time limit: 1" in text
    assert "memory: 1" in text and "20 graded submissions" in text
    plots = browser.execute_script("return Array.from(document.images).map(i => i.naturalWidth)")
    assert len(plots) == 2 and all(w > 0 for w in plots)  # data: images, allowed by the page's CSP
    browser.get((graded / "reports" / "mini-similarity.html").as_uri())
    assert browser.title == "Similarity: mini"  # the payload in copy_loops' code did not run
    assert browser.execute_script("return document.scripts.length") == 0
    text = browser.find_element("tag name", "body").text
    assert "copy_loops and ind_loops" in text and '<script>document.title = "PWNED"</script>' in text
    assert browser.find_elements("css selector", "span.match")


@pytest.mark.slow
def test_export_writes_each_lms_format(graded, tmp_path):
    interplab("export", "mini", "--course", str(graded), "--format", "csv", check=True)
    rows = {r[0]: r[1:] for r in _rows(graded / "grades" / "mini-csv.csv")}
    assert rows["student_id"] == ["score", "max_score", "percent"]
    assert rows["ind_plain"] == ["3", "3", "100.0"] and rows["squared_a"] == ["2", "3", "66.67"]
    assert len(rows) == 21

    interplab("export", "mini", "--course", str(graded), "--format", "canvas", "--title", "Mini (1234)", check=True)
    canvas = _rows(graded / "grades" / "mini-canvas.csv")
    assert canvas[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "Mini (1234)"]
    assert canvas[1] == ["Points Possible", "", "", "", "", "3"]
    assert ["", "", "", "axis0_a", "", "1"] in canvas  # no mapping: the hub user name is the login

    mapping = tmp_path / "ids.csv"
    mapping.write_text("hub_user,name,sis_id,login,email\n"
                       + "".join(f"{s},Student {s},S{i:03d},u{i:03d},{s}@uni.example\n" for i, s in enumerate(sorted(CLASS))))
    interplab("export", "mini", "--course", str(graded), "--format", "moodle", "--mapping", str(mapping), check=True)
    moodle = _rows(graded / "grades" / "mini-moodle.csv")
    assert moodle[0] == ["Username", "ID number", "Email address", "mini"]
    index = sorted(CLASS).index("both_wrong")
    assert [f"u{index:03d}", f"S{index:03d}", "both_wrong@uni.example", "0"] in moodle and len(moodle) == 21

    mapping.write_text("hub_user,login\nind_plain,u1\n")
    proc = interplab("export", "mini", "--course", str(graded), "--format", "moodle", "--mapping", str(mapping))
    assert proc.returncode == 2 and "19 graded student(s) missing from the id mapping" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_export_refuses_a_student_without_a_score(tmp_path):
    from interplab.autograder.course import Course, CourseError
    from interplab.autograder.export import export

    course = Course.load(make_course(tmp_path, TEST_ASSIGNMENTS))
    (course.root / "grades").mkdir()
    (course.root / "grades" / "mini.csv").write_text(
        "student_id,grade_id,score,max_score,status\nann,test_softmax,2,2,ok\nann,test_row_norms,0.5,1,ok\n"
        "bo,test_softmax,,2,infrastructure error (not graded)\nbo,test_row_norms,,1,infrastructure error (not graded)\n")
    with pytest.raises(CourseError, match=r"1 student\(s\) have no score .*bo"):
        export(course, "mini", "canvas")
    (course.root / "grades" / "mini.csv").write_text("student_id,grade_id,score,max_score,status\nann,test_softmax,2,2,ok\n"
                                                     "ann,test_row_norms,0.5,1,ok\n")
    assert _rows(export(course, "mini", "csv")) == [["student_id", "score", "max_score", "percent"], ["ann", "2.5", "3", "83.33"]]


class _Disguise(ast.NodeTransformer):
    """What a student hiding a copy does: every own name renamed (signatures kept: the checks call
    them by keyword), comments gone and the layout changed (``ast.unparse``), functions reordered."""

    def __init__(self, own: set[str], keep: set[str]) -> None:
        self.names = {name: f"q{i}" for i, name in enumerate(sorted(own - keep))}

    def visit_Name(self, node: ast.Name) -> ast.Name:
        node.id = self.names.get(node.id, node.id)
        return node


def _disguised(source: str) -> str:
    tree = ast.parse(source)
    keep = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    keep |= {a.arg for n in tree.body if isinstance(n, ast.FunctionDef) for a in ast.walk(n.args) if isinstance(a, ast.arg)}
    tree = _Disguise(similarity.bound_names(source) or set(), keep).visit(tree)
    tree.body.reverse()
    return ast.unparse(tree)


@pytest.mark.parametrize("slug", ["circuits", "probing"])
def test_real_assignment_copy_ranks_above_independent_solutions(slug):
    """On a real assignment's solution cells: the master and its independent alternatives
    (tests/alternatives/) score low, a mechanically disguised copy of either scores high."""
    import importlib.util
    import re

    from conftest import REPO

    spec = importlib.util.spec_from_file_location(f"alternatives_{slug}", REPO / "tests" / "alternatives" / f"{slug}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # the master's cells read as text (conftest's Master would import the checks, and torch with them)
    parts = re.split(r"^(# %%.*)$", (REPO / "assignments" / slug / f"{slug}.py").read_text(), flags=re.M)
    master = {re.search(r'grade_id="(\w+)"', h).group(1): src for h, src in zip(parts[1::2], parts[2::2])
              if 'role="solution"' in h}
    master = {k: v for k, v in master.items() if k in module.ALTERNATIVES}
    skeleton = similarity.skeleton_of({k: re.sub(r"### BEGIN SOLUTION.*?### END SOLUTION", "raise NotImplementedError()", v,
                                                 flags=re.S) for k, v in master.items()})
    cells = {"master": master, "alternative": {k: module.ALTERNATIVES[k] for k in master}}
    cells["master_copy"] = {k: _disguised(v) for k, v in cells["master"].items()}
    cells["alternative_copy"] = {k: _disguised(v) for k, v in cells["alternative"].items()}
    pairs = similarity.rank([similarity.submission_of(name, c, skeleton) for name, c in cells.items()])
    scores = {(a.student, b.student): s for a, b, s in pairs}
    copies = [scores[("master", "master_copy")], scores[("alternative", "alternative_copy")]]
    independent = [s for pair, s in scores.items() if pair not in (("master", "master_copy"), ("alternative", "alternative_copy"))]
    assert min(copies) > 0.8 and max(independent) < 0.3, scores
