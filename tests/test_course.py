"""The nbgrader course assignment: its form, its student version, and what its graded cells catch.

``notebooks/03_course_assignment.ipynb`` is the instructor version (nbgrader "source": reference
solutions between ``### BEGIN/END SOLUTION``, hidden tests between ``### BEGIN/END HIDDEN TESTS``).
``notebooks/course/make_release.py`` generates the student version with nbgrader.

The grading tests reproduce what ``nbgrader autograde`` does: it runs the *student's* notebook after
putting back the instructor's version of every locked and graded cell (hidden tests included). So each
wrong answer below is put into the student version's solution cell and the instructor's graded cells are
run after it; every wrong answer must fail with an assertion message, and the reference must pass.
One slow test runs the real ``nbgrader autograde`` on a submission.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbgrader")

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "notebooks" / "03_course_assignment.ipynb"
COURSE = ROOT / "notebooks" / "course"
RELEASE = COURSE / "release" / "sglrp_lab" / "03_course_assignment.ipynb"
TOTAL_POINTS = 15

# Plausible wrong answers (issue 10, and others students hand in), keyed by the solution cell they replace:
# name -> (code, a phrase the failing assertion's message must contain).
WRONG_ANSWERS = {
    "relevance_total": {
        "sum over the whole batch": (
            "def relevance_total(relevance):\n    return np.sum(relevance)", "shape (N,)"),
        "sum of absolute values": (
            "def relevance_total(relevance):\n    r = np.abs(np.asarray(relevance))\n"
            "    return r.reshape(len(r), -1).sum(1)", "signed"),
        "forgets the channel axis": (
            "def relevance_total(relevance):\n    return np.asarray(relevance).sum(axis=(1, 2))", "shape (N,)"),
        "assumes 4-D input": (
            "def relevance_total(relevance):\n    return np.asarray(relevance).sum(axis=(1, 2, 3))",
            "every axis but the first"),
    },
    "box_share": {
        "inclusive box ends": (
            "def box_share(heatmap, box):\n    pos = np.clip(np.asarray(heatmap, float), 0, None)\n"
            "    y0, x0, y1, x1 = box\n    total = pos.sum()\n"
            "    return float(pos[y0:y1 + 1, x0:x1 + 1].sum() / total) if total > 0 else 0.0", "exclusive"),
        "absolute instead of positive relevance": (
            "def box_share(heatmap, box):\n    a = np.abs(np.asarray(heatmap, float))\n    y0, x0, y1, x1 = box\n"
            "    return float(a[y0:y1, x0:x1].sum() / a.sum()) if a.sum() > 0 else 0.0", "units of positive"),
        "nan for a map without positive relevance": (
            "def box_share(heatmap, box):\n    pos = np.clip(np.asarray(heatmap, float), 0, None)\n"
            "    y0, x0, y1, x1 = box\n    with np.errstate(invalid='ignore'):\n"
            "        return float(pos[y0:y1, x0:x1].sum() / pos.sum())", "share 0.0"),
        "clips the heatmap in place": (
            "def box_share(heatmap, box):\n    np.clip(heatmap, 0, None, out=heatmap)\n    y0, x0, y1, x1 = box\n"
            "    total = heatmap.sum()\n    return float(heatmap[y0:y1, x0:x1].sum() / total) if total > 0 else 0.0",
            "must not modify"),
    },
    "randomize_weights": {
        "mutates the original model": (
            "def randomize_weights(model, seed=0, layers=None):\n    rng = np.random.default_rng(seed)\n"
            "    for layer in model.layers:\n"
            "        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and (layers is None or layer.name in layers):\n"
            "            k, *rest = layer.get_weights()\n"
            "            layer.set_weights([rng.normal(0, k.std(), k.shape).astype(k.dtype), *rest])\n"
            "    clone = keras.models.clone_model(model)\n    clone.set_weights(model.get_weights())\n    return clone",
            "changed the weights of the model it was given"),
        "clone without the trained weights": (
            "def randomize_weights(model, seed=0, layers=None):\n    rng = np.random.default_rng(seed)\n"
            "    clone = keras.models.clone_model(model)\n"
            "    for layer in clone.layers:\n"
            "        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and (layers is None or layer.name in layers):\n"
            "            k, *rest = layer.get_weights()\n"
            "            layer.set_weights([rng.normal(0, k.std(), k.shape).astype(k.dtype), *rest])\n    return clone",
            "trained"),
        "noise with standard deviation 1": (
            "def randomize_weights(model, seed=0, layers=None):\n    rng = np.random.default_rng(seed)\n"
            "    clone = keras.models.clone_model(model)\n    clone.set_weights(model.get_weights())\n"
            "    for layer in clone.layers:\n"
            "        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and (layers is None or layer.name in layers):\n"
            "            k, *rest = layer.get_weights()\n"
            "            layer.set_weights([rng.normal(0, 1.0, k.shape).astype(k.dtype), *rest])\n    return clone",
            "standard deviation"),
        "ignores layers=": (
            "def randomize_weights(model, seed=0, layers=None):\n    rng = np.random.default_rng(seed)\n"
            "    clone = keras.models.clone_model(model)\n    clone.set_weights(model.get_weights())\n"
            "    for layer in clone.layers:\n"
            "        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):\n"
            "            k, *rest = layer.get_weights()\n"
            "            layer.set_weights([rng.normal(0, k.std(), k.shape).astype(k.dtype), *rest])\n    return clone",
            "layers=['predictions']"),
    },
    "rank_correlation": {
        "Pearson on the values": (
            "def rank_correlation(a, b):\n    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])",
            "correlate ranks, not values"),
        "ordinal ranks, ties not averaged": (
            "def rank_correlation(a, b):\n    ra = np.argsort(np.argsort(np.ravel(a)))\n"
            "    rb = np.argsort(np.argsort(np.ravel(b)))\n    return float(np.corrcoef(ra, rb)[0, 1])",
            "average rank"),
        "nan for a constant array": (
            "def rank_correlation(a, b):\n    def ranks(v):\n        v = np.ravel(np.asarray(v, float))\n"
            "        return np.array([(v < x).sum() + ((v == x).sum() + 1) / 2 for x in v])\n"
            "    with np.errstate(invalid='ignore', divide='ignore'):\n"
            "        return float(np.corrcoef(ranks(a), ranks(b))[0, 1])",
            "return 0.0"),
    },
}


def _nb(path: Path):
    return nbformat.read(path, as_version=4)


def _grade(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def _cells_by_id(nb) -> dict:
    return {_grade(c)["grade_id"]: c for c in nb.cells if "grade_id" in _grade(c)}


def _load_make_release():
    spec = importlib.util.spec_from_file_location("make_release", COURSE / "make_release.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _env() -> dict:
    env = dict(os.environ, SGLRP_WIDGETS_OFFLINE="1", MPLBACKEND="module://matplotlib_inline.backend_inline")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


# ------------------------------------------------------------------ form
def test_source_is_an_nbgrader_assignment():
    nb = _nb(SOURCE)
    cells = _cells_by_id(nb)
    assert len(cells) == len(nb.cells), "every cell carries nbgrader metadata (a grade_id)"
    graded = {k: c for k, c in cells.items() if _grade(c)["grade"]}
    assert sum(_grade(c)["points"] for c in graded.values()) == TOTAL_POINTS
    for name in WRONG_ANSWERS:
        assert _grade(cells[name])["solution"] and not _grade(cells[name])["locked"], name
        test = cells[f"test_{name}"]
        assert _grade(test)["grade"] and _grade(test)["locked"] and _grade(test)["points"] > 0, name
        assert "### BEGIN HIDDEN TESTS" in test.source, f"test_{name} has hidden tests"
        assert "### BEGIN SOLUTION" in cells[name].source, name
    for cell in nb.cells:
        g = _grade(cell)
        if not g["solution"]:
            assert g["locked"], f"{g['grade_id']}: cells students must not edit are locked"
        if cell.cell_type == "code" and g["grade"]:
            for node in ast.walk(ast.parse(cell.source)):
                if isinstance(node, ast.Assert):
                    assert node.msg is not None, f"{g['grade_id']}: an assert without a message (line {node.lineno})"
    manual = [c for c in nb.cells if _grade(c)["grade"] and _grade(c)["solution"]]
    assert [c.cell_type for c in manual] == ["markdown"], "one manually graded written answer"


def test_student_version_is_generated_and_up_to_date(tmp_path):
    """The committed student version is exactly what the repository's command generates."""
    generated = _load_make_release().make_release(tmp_path / "course")
    assert generated.is_file()
    assert json.loads(generated.read_text()) == json.loads(RELEASE.read_text()), (
        "notebooks/course/release is stale: run `python notebooks/course/make_release.py` and commit")


def test_student_version_has_no_solution_text():
    source, release = _nb(SOURCE), _nb(RELEASE)
    text = RELEASE.read_text()
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "HIDDEN TESTS", "Reference answer"):
        assert marker not in text, marker
    secret_lines, public = [], []
    for cell in source.cells:
        text = cell.source
        for begin, end in (("### BEGIN SOLUTION", "### END SOLUTION"), ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")):
            pattern = re.escape(begin) + r"(.*?)" + re.escape(end)
            for block in re.findall(pattern, text, flags=re.S):
                secret_lines += [ln.strip() for ln in block.splitlines() if len(ln.strip()) > 12]
            text = re.sub(pattern, "", text, flags=re.S)
        if _grade(cell)["solution"] and cell.cell_type == "markdown":
            secret_lines += [ln.strip() for ln in cell.source.splitlines() if len(ln.strip()) > 12]
        else:
            public.append(text)
    assert len(secret_lines) > 40
    student_text = "\n".join(c.source for c in release.cells)
    # a line may be secret and public at once (a hidden test repeating a visible check)
    leaked = [ln for ln in secret_lines if ln in student_text and ln not in "\n".join(public)]
    assert not leaked, leaked
    released = _cells_by_id(release)
    for name in WRONG_ANSWERS:
        assert "raise NotImplementedError()" in released[name].source, name
    assert released["discussion"].source.strip() == "YOUR ANSWER HERE"


# ------------------------------------------------------------------ grading, as nbgrader autograde runs it
class Grader:
    """One kernel running the student version with the instructor's graded cells put back."""

    def __init__(self):
        import nbclient

        self.source = _cells_by_id(_nb(SOURCE))
        self.release = _nb(RELEASE)
        self.client = nbclient.NotebookClient(self.release, timeout=600, kernel_name="python3",
                                              resources={"metadata": {"path": str(ROOT)}})

    def cell(self, grade_id: str, code: str | None = None):
        """The autograder's version of a cell (graded and locked cells from the source) or ``code``."""
        source = self.source[grade_id]
        return nbformat.v4.new_code_cell(source.source if code is None else code, metadata=source.metadata)

    def run(self, cell) -> tuple[str, str] | None:
        """Execute one cell; the (error name, message) it raised, or None."""
        from nbclient.exceptions import CellExecutionError

        try:
            self.client.execute_cell(cell, 0)
        except CellExecutionError as e:
            return e.ename, e.evalue
        return None


@pytest.fixture(scope="module")
def grader():
    saved = dict(os.environ)
    os.environ.update(_env())
    g = Grader()
    try:
        with g.client.setup_kernel():
            assert g.run(g.cell("setup")) is None
            # so that a wrong answer that mutates the cached demo model cannot spoil the next ones
            g.run(nbformat.v4.new_code_cell("_trained = [w.copy() for w in model.get_weights()]"))
            yield g
    finally:
        os.environ.clear()
        os.environ.update(saved)


CASES = [(fn, name) for fn, answers in WRONG_ANSWERS.items() for name in answers]


@pytest.mark.slow
@pytest.mark.parametrize("function", list(WRONG_ANSWERS))
def test_reference_function_passes_its_tests(grader, function):
    grader.run(nbformat.v4.new_code_cell("model.set_weights(_trained)"))
    assert grader.run(grader.cell(function)) is None
    assert grader.run(grader.cell(f"test_{function}")) is None


@pytest.mark.slow
@pytest.mark.parametrize("function, answer", CASES, ids=[f"{f}: {a}" for f, a in CASES])
def test_wrong_answer_fails_with_a_message(grader, function, answer):
    code, phrase = WRONG_ANSWERS[function][answer]
    grader.run(nbformat.v4.new_code_cell("model.set_weights(_trained)"))
    assert grader.run(grader.cell(function, code)) is None, "the wrong answer itself must run"
    failure = grader.run(grader.cell(f"test_{function}"))
    assert failure is not None, f"the graded cell of {function} accepts the wrong answer {answer!r}"
    ename, message = failure
    assert ename == "AssertionError" and message.strip(), failure
    assert phrase in message, f"message {message!r} should say {phrase!r}"


# ------------------------------------------------------------------ the real nbgrader, end to end
def _fill(release_nb, answers: dict[str, str]):
    nb = nbformat.from_dict(json.loads(json.dumps(release_nb)))
    for cell in nb.cells:
        gid = _grade(cell).get("grade_id")
        if gid in answers:
            cell.source = answers[gid]
    return nb


@pytest.mark.slow
def test_nbgrader_autograde_end_to_end(tmp_path):
    """The teacher's guide, run: generate, a student submits (the reference but one wrong answer), autograde:
    every graded cell but the wrong answer's gets its points, and the printed numbers match the discussion."""
    course = tmp_path / "course"
    _load_make_release().make_release(course)
    source = _cells_by_id(_nb(SOURCE))
    answers = {name: source[name].source for name in WRONG_ANSWERS}    # the reference solutions ...
    answers["box_share"] = WRONG_ANSWERS["box_share"]["inclusive box ends"][0]  # ... but one mistake
    answers["discussion"] = "LRP barely changes when the top layer is random."
    submitted = course / "submitted" / "alice" / "sglrp_lab"
    submitted.mkdir(parents=True)
    nbformat.write(_fill(_nb(course / "release" / "sglrp_lab" / RELEASE.name), answers), submitted / RELEASE.name)
    r = subprocess.run([sys.executable, "-m", "nbgrader", "autograde", "sglrp_lab", "--create", "--log-level=ERROR"],
                       cwd=course, env=_env(), capture_output=True, text=True, timeout=900, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        nb = gb.find_submission_notebook(RELEASE.stem, "sglrp_lab", "alice")
        scores = {g.name: (g.score, g.max_score) for g in nb.grades}
        manual = {g.name for g in nb.grades if g.needs_manual_grade}
    assert scores["test_box_share"] == (0, 3), scores
    for name in ("test_relevance_total", "test_conservation", "test_randomize_weights", "test_rank_correlation",
                 "test_sanity"):
        assert scores[name][0] == scores[name][1] > 0, (name, scores)
    assert manual == {"discussion"}, "only the written answer waits for manual grading"
    _check_discussion_matches(_nb(course / "autograded" / "alice" / "sglrp_lab" / RELEASE.name))
    shutil.rmtree(course / "autograded", ignore_errors=True)


def _check_discussion_matches(graded_nb):
    """The reference answer's claims hold for the numbers the sanity cell printed."""
    sanity = next(c for c in graded_nb.cells if _grade(c).get("grade_id") == "sanity")
    text = "".join(o.get("text", "") for o in sanity.outputs)
    rows = dict((m[0], (float(m[1]), float(m[2]))) for m in re.findall(r"^(\w+)\s+(-?[\d.]+)\s+(-?[\d.]+)$", text, re.M))
    assert set(rows) == {"gradient", "grad_cam", "lrp", "clrp", "sglrp"}, text
    top = {m: v[0] for m, v in rows.items()}
    every = {m: v[1] for m, v in rows.items()}
    # "With only the top layer random, LRP's maps are almost unchanged (rank correlation above 0.9) ...
    #  CLRP and SGLRP ... change clearly, as do the gradient's and Grad-CAM's."
    assert top["lrp"] > 0.9, top
    assert max(top["clrp"], top["sglrp"], top["gradient"], top["grad_cam"]) < top["lrp"] - 0.2, top
    # "With every layer random, all maps change a lot, but LRP and SGLRP keep more structure than the
    #  gradient and Grad-CAM."
    assert max(every.values()) < 0.5, every
    assert min(every["lrp"], every["sglrp"]) > max(every["gradient"], every["grad_cam"]) + 0.1, every
