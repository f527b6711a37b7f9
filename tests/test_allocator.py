"""The process's allocator settings: glibc keeps freed memory; PyTorch's large blocks go on huge pages."""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys

import pytest

from tunelab import allocator


def _run(code: str, **env: str) -> str:
    ours = ("THP_MEM_ALLOC_ENABLE", "TUNELAB_KEEP_FREED_MEMORY")
    environment = {k: v for k, v in os.environ.items() if k not in ours}
    done = subprocess.run([sys.executable, "-c", code], env=environment | env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.skipif(not (ctypes.util.find_library("c") or "").startswith("libc.so"), reason="not glibc")
def test_glibc_keeps_freed_memory_and_says_so():
    said = _run("from tunelab.allocator import prepare_process; print(prepare_process())")
    assert said.startswith("glibc malloc keeping freed memory")


def test_it_can_be_turned_off_and_a_users_huge_page_setting_wins():
    code = "import os, tunelab.allocator as a; print(a.prepare_process(), os.environ['THP_MEM_ALLOC_ENABLE'])"
    said = _run(code, TUNELAB_KEEP_FREED_MEMORY="0", THP_MEM_ALLOC_ENABLE="0")
    assert said == "glibc defaults (TUNELAB_KEEP_FREED_MEMORY=0) 0"
    assert _run(code, TUNELAB_KEEP_FREED_MEMORY="0").endswith(" 1")  # set when the user has not


def test_the_module_does_not_import_torch():
    assert _run("import sys, tunelab.allocator; print('torch' in sys.modules)") == "False"
    assert allocator.keep_freed_memory.__doc__
