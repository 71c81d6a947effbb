"""Generate the student version of the course assignment with nbgrader.

    python notebooks/course/make_release.py                # in this folder (the repository's course)
    python notebooks/course/make_release.py --course DIR   # set up DIR as your own nbgrader course

Copies ``notebooks/03_course_assignment.ipynb`` (the instructor version: reference solutions, hidden
tests) to ``<course>/source/sglrp_lab/`` and runs ``nbgrader generate_assignment sglrp_lab``, which
writes the student version to ``<course>/release/sglrp_lab/03_course_assignment.ipynb`` (solutions
replaced by stubs, hidden tests removed, graded cells locked and checksummed) and records the graded
cells in ``<course>/gradebook.db`` for ``nbgrader autograde``. The student version in this repository is
the output of the first command; a test checks that it is up to date.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent / "03_course_assignment.ipynb"
ASSIGNMENT = "sglrp_lab"


def make_release(course: Path = HERE) -> Path:
    """Set up ``course`` (if needed) and generate the student version; returns its path."""
    course = Path(course).resolve()
    course.mkdir(parents=True, exist_ok=True)
    if not (course / "nbgrader_config.py").exists():
        shutil.copy(HERE / "nbgrader_config.py", course / "nbgrader_config.py")
    source = course / "source" / ASSIGNMENT
    source.mkdir(parents=True, exist_ok=True)
    shutil.copy(SOURCE, source / SOURCE.name)
    subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", ASSIGNMENT, "--force",
                    "--log-level=ERROR"], cwd=course, check=True)
    return course / "release" / ASSIGNMENT / SOURCE.name


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--course", type=Path, default=HERE, help="nbgrader course folder (default: %(default)s)")
    print(make_release(ap.parse_args(argv).course))
    return 0


if __name__ == "__main__":
    sys.exit(main())
