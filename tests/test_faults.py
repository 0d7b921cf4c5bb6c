"""Faults from outside the cell, on real processes: a night must never pass with nothing judged.

Each test runs a small night of tiny random-weight cells through pytest (pytester) and
injects its fault from outside: a real CPU load beside the cells.
"""

import subprocess
import sys
import time

AXES = """
    padding = ["dynamic"]
    batch_size = [8]
"""

# A whole core, from another process: what a busy CI machine, or an orphan of a killed run, is.
HOG = "import sys, time\nend = time.time() + float(sys.argv[1])\nwhile time.time() < end: pass\n"


def hog(seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOG, str(seconds)])


def test_a_night_disturbed_by_a_load_that_stays_fails_where_judgment_was_asked(bench_project):
    bench = bench_project("busy", 30, AXES)
    bench.runpytest("--matrix", "busy", "-p", "no:cacheprovider", "--update-baselines").assert_outcomes(passed=1)
    load = hog(600)
    try:
        time.sleep(1)
        result = bench.runpytest("--matrix", "busy", "-p", "no:cacheprovider", "--require-baselines",
                                 "--max-foreign-load", "0.5", "--quiet-wait", "12")
    finally:
        load.kill()
        load.wait()
    assert result.ret != 0, "a night whose cells could not be judged does not pass"
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*disturbed (other processes used * CPU cores*; waiting up to 12 s*",
                                 "*the machine did not quieten in * s (other processes used*): it stays disturbed*",
                                 "*--require-baselines asks that every cell be judged*",
                                 "judged 0 of 1 cells; not judged: 1 disturbed by another load*"])


def test_a_cell_disturbed_by_a_passing_load_is_measured_again_and_judged(bench_project):
    bench = bench_project("busy", 30, AXES)
    bench.runpytest("--matrix", "busy", "-p", "no:cacheprovider", "--update-baselines").assert_outcomes(passed=1)
    load = hog(8)  # busy through the first measurement, gone before the re-run
    try:
        time.sleep(1)
        result = bench.runpytest("--matrix", "busy", "-p", "no:cacheprovider", "--require-baselines",
                                 "--max-foreign-load", "0.5", "-k", "not overhead")
    finally:
        load.kill()
        load.wait()
    result.stdout.fnmatch_lines(["*disturbed (other processes used * CPU cores*; waiting up to 300 s for a quiet "
                                 "machine, then measuring it again (1/2)*"])
    assert result.ret == 0, result.stdout.str()[-3000:]
    result.stdout.fnmatch_lines(["judged 1 of 1 cells (0 regressed)*"])
