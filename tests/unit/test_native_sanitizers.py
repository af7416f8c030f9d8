"""The native core built with AddressSanitizer + UndefinedBehaviorSanitizer runs the solver tests clean.

The test builds the extension a second time, from the same CMakeLists.txt, with -fsanitize=address,undefined
into a temporary directory, then runs the golden, fuzz and solver tests in a child Python that loads that
build (ray_pipeline.solver.core.NATIVE_ENV) with the sanitizer runtimes preloaded (CPython itself is not
instrumented, so ASan's runtime has to be in the process before the module). Any report fails the run:
UBSan halts on the first error, ASan always does. Leak checking stays off: CPython keeps memory at exit.

That build also leaves out the graph scorer's AVX2 clones (-DRP_NO_SIMD_CLONES, native/graph.cpp): the same source
for the SSE2 target only. Its scores are compared bitwise with the installed build's (which runs the AVX2 clones on
a CPU that has them): the claim that the clones compute the same floats.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SANITIZE = "-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"


def _runtime(name: str) -> str:
    path = subprocess.run(["g++", f"-print-file-name={name}"], capture_output=True, text=True, check=True).stdout.strip()
    if not os.path.isabs(path):
        pytest.fail(f"g++ does not ship {name}: cannot run the sanitizer build")
    return path


def test_solver_tests_run_clean_under_asan_and_ubsan(tmp_path):
    import nanobind

    build = tmp_path / "build"
    subprocess.run(["cmake", "-S", str(REPO), "-B", str(build), "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
                    f"-DCMAKE_CXX_FLAGS={SANITIZE} -DRP_NO_SIMD_CLONES", f"-DCMAKE_SHARED_LINKER_FLAGS={SANITIZE}",
                    f"-Dnanobind_DIR={nanobind.cmake_dir()}", f"-DPython_EXECUTABLE={sys.executable}"],
                   check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "-j", "2"], check=True, capture_output=True)
    (module,) = build.glob("ray_pipeline_native*.so")
    symbols = subprocess.run(["nm", "-D", str(module)], capture_output=True, text=True, check=True).stdout
    assert "__asan_" in symbols and "__ubsan_" in symbols, "the build is not instrumented"

    env = dict(os.environ, RAY_PIPELINE_NATIVE_CORE=str(module),
               LD_PRELOAD=f"{_runtime('libasan.so')} {_runtime('libubsan.so')}",
               ASAN_OPTIONS="detect_leaks=0:abort_on_error=0:halt_on_error=1",
               UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1")
    probe = subprocess.run([sys.executable, "-c", "from ray_pipeline.solver import core; print(core._native.__file__)"],
                           env=env, capture_output=True, text=True)
    assert probe.returncode == 0 and probe.stdout.strip() == str(module), probe.stderr[-2000:]
    # What exercises the core, not the slow pure-Python reference next to it: the golden trees and the
    # every-option fuzz (the reference comparison itself runs un-instrumented in the ordinary test run).
    tests = ["tests/unit/test_native_golden.py", "tests/unit/test_native_fuzz.py::test_native_core_every_option_on_random_instances",
             "tests/unit/test_native_fuzz.py::test_bad_states_are_refused_with_a_clear_error",
             "tests/unit/test_native_fuzz.py::test_native_mlp_policy_on_random_weights_and_instances",
             "tests/unit/test_expert.py",  # probes: solvers built and run inside a running search
             "tests/unit/test_native_graph.py"]  # the graph scorer in the core (torch-free)
    # The biggest golden instances (Sudoku, xlarge) and the expert's savings check (large probes) add minutes
    # under ASan and no code path the rest misses.
    r = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-k",
                        "not sudoku and not xlarge and not saves_nodes", *tests], cwd=REPO,
                       env=env, capture_output=True, text=True)
    report = r.stdout[-3000:] + r.stderr[-6000:]
    assert r.returncode == 0, report
    assert "runtime error" not in r.stderr and "AddressSanitizer" not in r.stderr, report
    assert " passed" in r.stdout and "failed" not in r.stdout, report

    # the same graph scores, bit for bit, without the AVX2 clones (this build) and with them (the installed one)
    from tests.unit.test_native_graph import score_digest

    code = f"from tests.unit.test_native_graph import score_digest; print(score_digest({str(tmp_path)!r}))"
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    (tmp_path / "installed").mkdir()
    assert r.stdout.strip() == score_digest(tmp_path / "installed")
