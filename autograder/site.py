"""``interplab site``: the course website, a static site built offline with MkDocs and mkdocs-jupyter.

Why MkDocs + mkdocs-jupyter: both are pip packages of the Jupyter ecosystem's documentation tool
chain that build offline in seconds with no Node.js (Jupyter Book 2 / MyST needs the `mystmd`
Node tool chain), and the Material theme ships every asset it uses (fonts off, so no Google Fonts).

Sources (one source of truth each, never the instructor's solutions):

- the masters' opening cells (title, learning objectives, readings) and graded cells (points), and
  course.toml's ``[schedule]`` and ``[late_policy]``: read by ``syllabus.py``;
- the *released* student notebooks, ``course/release/<a>/<a>.ipynb`` (solutions cleared and mark
  schemes removed by nbgrader), rendered without executing them.

Steps: ``pages`` (Markdown pages and mkdocs.yml in a scratch folder) -> ``render`` (``mkdocs build``)
-> ``validate`` (no page loads anything from the network, and no solution cell of any source
notebook appears in any file: the site is not written and the build fails otherwise).
Notebook math is shown as TeX source: MathJax would come from a CDN (mkdocs-jupyter's default),
and no offline copy of it ships with the packages we pin.
"""
from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat

from interplab.autograder.course import Course, CourseError
from interplab.autograder.deadlines import Schedule
from interplab.autograder.syllabus import AssignmentInfo, course_assignments, points_text, when

SITE_DIR = "site"
# a resource the browser fetches by itself (scripts, modules, styles, images, frames) from another host
_REMOTE_RESOURCE = re.compile(r"<(?:script|img|iframe)[^>]*\ssrc=[\"'](?:https?:)?//|<link[^>]*\shref=[\"'](?:https?:)?//"
                              r"|\bimport\s*\(?\s*[\"'](?:https?:)?//|\bimport\s[^;]*\sfrom\s*[\"'](?:https?:)?//", re.I)
# nbconvert's Mermaid loader, which mkdocs-jupyter's template always includes: it imports mermaid.js
# from cdnjs when a page has a Mermaid diagram. Our notebooks have none, so the site drops it.
_MERMAID_LOADER = re.compile(r'<script type="module">\s*document\.addEventListener\("DOMContentLoaded", async \(\) => \{\s*'
                             r'const diagrams = document\.querySelectorAll\("\.jp-Mermaid.*?</script>', re.S)


class SiteError(CourseError):
    """A site that would leak a solution or load something from the network is not built."""


def _due(info: AssignmentInfo, schedule: Schedule) -> str:
    return when(info.due.due.astimezone(schedule.timezone)) if info.due else "self-study"


def index_page(course: Course, infos: list[AssignmentInfo], schedule: Schedule) -> str:
    lines = [f"# {course.id}: interpretability, hands on", "",
             "A course in notebook assignments: each week you implement the methods of one area of "
             "interpretability research and check them on small models that ship with the course.", "",
             "## Schedule", "", "| week | assignment | due | points |", "| --- | --- | --- | --- |"]
    for info in infos:
        week = str(info.due.week) if info.due else "-"
        lines.append(f"| {week} | [{info.title}](assignments/{info.slug}.md) | {_due(info, schedule)} | {points_text(info)} |")
    lines += ["", f"Times are {schedule.timezone.key} time. Late submissions: {schedule.policy.describe()}.", "",
              "See [how grading works](grading.md).", ""]
    return "\n".join(lines)


def grading_page(schedule: Schedule) -> str:
    return "\n".join([
        "# How grading works", "",
        "- **Checks.** Every exercise ends with a test cell `check(\"<assignment>.<exercise>\", your_function)`. "
        "It runs your function on generated inputs and prints one pass line, or says what is wrong: structure, "
        "shape, dtype, which values, and a known mistake by name.",
        "- **Hidden inputs.** Your points come from the same checks on hidden inputs drawn for you alone when "
        "your submission is graded. A function that is right in general passes them; one tuned to the "
        "public inputs does not.",
        "- **Written answers.** Questions followed by *Answer in the cell below* are graded by hand by the "
        "instructors, with a mark scheme.",
        f"- **Deadlines.** {schedule.policy.describe()}. Extensions are granted per student.",
        "- **Feedback.** After grading, *Fetch Feedback* in the Assignment List gives a page with a table of "
        "your exercises: points, pass or fail, and the reason.",
        "", "## Self-study", "",
        "Without a hub, on your own machine: `make lab` (or `interplab lab`) copies the released assignments "
        "into `work/` and opens JupyterLab; `interplab check work/<assignment>/<assignment>.ipynb` checks a "
        "whole notebook, one line per exercise.", ""])


def assignment_page(info: AssignmentInfo, schedule: Schedule, has_notebook: bool) -> str:
    lines = [f"# {info.title}", "",
             f"**Week** {info.due.week if info.due else '-'}, **due** {_due(info, schedule)}, "
             f"**points** {points_text(info)}.", ""]
    if info.objectives:
        lines += ["## After this assignment you will be able to", "", info.objectives, ""]
    if info.readings:
        lines += ["## Read first", "", info.readings, ""]
    lines += ["## The notebook", ""]
    lines += ([f"[Read the student notebook](../notebooks/{info.slug}.ipynb) (as released: the exercises, "
               "without solutions)."] if has_notebook else ["Not released yet."])
    lines += ["", "## Self-study", "", "Fetch it into your workspace, work, and check the whole notebook:", "",
              "```bash", "interplab fetch", f"interplab check work/{info.slug}/{info.slug}.ipynb", "```", ""]
    return "\n".join(lines)


def mkdocs_config(course: Course, infos: list[AssignmentInfo]) -> dict:
    return {
        "site_name": f"{course.id} course",
        "use_directory_urls": False,  # plain file links: the site also works opened from disk
        "theme": {"name": "material", "font": False},  # no Google Fonts: nothing from the network
        "nav": [{"Syllabus": "index.md"}, {"How grading works": "grading.md"},
                {"Assignments": [{info.title: f"assignments/{info.slug}.md"} for info in infos]}],
        "plugins": [{"mkdocs-jupyter": {"execute": False, "include_requirejs": False, "include_source": False,
                                        "ignore_h1_titles": True}}],
        "markdown_extensions": ["tables"],
    }


def _normalised(text: str) -> str:
    return " ".join(text.split())


def solution_bodies(nb: nbformat.NotebookNode) -> list[str]:
    """Each solution region, mark scheme and written model answer of a source notebook, whitespace
    collapsed (long enough not to occur by chance)."""
    bodies = []
    for cell in nb.cells:
        for begin, end in (("### BEGIN SOLUTION", "### END SOLUTION"), ("### BEGIN MARK SCHEME", "### END MARK SCHEME")):
            bodies += re.findall(re.escape(begin) + r"(.*?)" + re.escape(end), cell.source, flags=re.S)
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type == "markdown" and meta.get("solution") and "BEGIN SOLUTION" not in cell.source:
            bodies.append(cell.source)
    return [body for body in map(_normalised, bodies) if len(body) >= 20]


def page_text(text: str) -> str:
    """A file's text as a reader sees it: tags (syntax highlighting) dropped, entities and JSON
    escapes undone, whitespace collapsed."""
    text = re.sub(r"<[^>]+>", "", text.replace("\\n", "\n").replace('\\"', '"'))
    return _normalised(html.unescape(text))


def leaks(site: Path, course: Course, assignments: list[str]) -> list[str]:
    """``file: assignment: start of body`` for every solution region, mark scheme or model answer of
    a source notebook that appears in a file of the site."""
    secrets = {a: solution_bodies(nbformat.read(course.source(a) / f"{a}.ipynb", as_version=4))
               for a in assignments if (course.source(a) / f"{a}.ipynb").is_file()}
    found = []
    for path in sorted(p for p in site.rglob("*") if p.is_file()):
        text = page_text(path.read_text(errors="ignore"))
        found += [f"{path.relative_to(site)}: {a}: {body[:60]}" for a, bodies in secrets.items() for body in bodies if body in text]
    return found


def remote_resources(site: Path) -> list[str]:
    return [f"{p.relative_to(site)}: {m.group(0)[:80]}" for p in sorted(site.rglob("*.html"))
            for m in _REMOTE_RESOURCE.finditer(p.read_text(errors="ignore"))]


def build_site(course: Course, out: Path | None = None) -> Path:
    out = out or course.root / SITE_DIR
    schedule = Schedule.of(course)
    infos = course_assignments(course)
    with tempfile.TemporaryDirectory(prefix="interplab-site-") as tmp:
        docs = Path(tmp) / "docs"
        (docs / "assignments").mkdir(parents=True)
        (docs / "notebooks").mkdir()
        (docs / "index.md").write_text(index_page(course, infos, schedule))
        (docs / "grading.md").write_text(grading_page(schedule))
        released = []
        for info in infos:
            notebook = course.release(info.slug) / f"{info.slug}.ipynb"
            if notebook.is_file():  # the student version only, never course/source
                shutil.copy(notebook, docs / "notebooks" / notebook.name)
                released.append(info.slug)
            (docs / "assignments" / f"{info.slug}.md").write_text(assignment_page(info, schedule, notebook.is_file()))
        config = Path(tmp) / "mkdocs.yml"
        config.write_text(json.dumps(mkdocs_config(course, infos), indent=1))  # JSON is YAML
        staging = Path(tmp) / "site"
        proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--quiet", "--strict", "-f", str(config),
                               "-d", str(staging)], capture_output=True, text=True,
                              cwd=tmp)  # mkdocs-jupyter keeps a .cache/ in the working directory
        if proc.returncode != 0:
            raise SiteError("mkdocs build failed: " + " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-5:]))
        for page in (staging / "notebooks").glob("*.html"):
            page.write_text(_MERMAID_LOADER.sub("", page.read_text()))
        problems = remote_resources(staging) + leaks(staging, course, [i.slug for i in infos])
        if problems:
            raise SiteError(f"the site is not written: {len(problems)} problem(s), first: {problems[0]}")
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(staging, out)
    return out


def site_command(args: argparse.Namespace) -> int:
    course = Course.load(args.course)
    out = build_site(course, args.out)
    print(f"course site: {out / 'index.html'}")
    return 0
