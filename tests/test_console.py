"""Third-party noise stays off the console by default; --verbose (is_verbose) lets it through."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from memlora.core import console


def _run(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in console._ENV}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_native_stderr_held_then_dropped_or_replayed():
    code = ("import os, sys\nfrom memlora.core import console\nconsole.quiet_third_party({v})\n"
            "with console.native_stderr_captured():\n    os.write(2, b'native noise\\n')\n"
            "print('mine', file=sys.stderr)\n")
    quiet, loud = _run(code.format(v=False)), _run(code.format(v=True))
    assert quiet.returncode == loud.returncode == 0
    assert quiet.stderr == "mine\n"
    assert "native noise" in loud.stderr and "mine" in loud.stderr


def test_native_stderr_replayed_when_the_call_fails():
    code = ("import os\nfrom memlora.core import console\nconsole.quiet_third_party(False)\n"
            "try:\n    with console.native_stderr_captured():\n        os.write(2, b'why it failed\\n')\n"
            "        raise RuntimeError('x')\nexcept RuntimeError:\n    pass\n")
    assert "why it failed" in _run(code).stderr


@pytest.mark.parametrize("verbose", [False, True])
def test_torch_stack_import_is_quiet(verbose):
    res = _run(f"from memlora.core import console\nconsole.quiet_third_party({verbose})\n"
               "import torch, torchao, executorch.exir, coremltools\nprint('ok')\n")
    assert res.returncode == 0 and res.stdout == "ok\n"
    if verbose:
        assert res.stderr  # the noise this module exists to hide is really there
    else:
        assert res.stderr == "", res.stderr
