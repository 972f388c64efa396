"""Keep third-party noise off the console unless ``--verbose``: memlora's own lines come first.

Three kinds of noise reach a user's terminal from the stack memlora drives:

* Python ``logging`` and ``warnings`` from torch, torchao, coremltools, executorch, onnxscript and
  transformers (torch re-sets its loggers' levels on import, so it is told through ``TORCH_LOGS``
  before the import instead);
* progress bars of the libraries (tqdm honours ``TQDM_DISABLE``);
* native code writing straight to file descriptor 2 (XNNPACK's cpuinfo, ExecuTorch's runtime log):
  :func:`native_stderr_captured` holds it in a temporary file and replays it only when verbose or
  when the wrapped call fails, so it cannot land inside a streamed chat answer.
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
import warnings
from contextlib import contextmanager
from typing import Iterator

THIRD_PARTY = ("torch", "torchao", "coremltools", "executorch", "onnxscript", "onnx_ir", "onnx",
               "onnxruntime", "transformers", "peft", "huggingface_hub", "safetensors", "matplotlib", "PIL")
_ENV = {"TORCH_LOGS": "-all", "TORCH_CPP_LOG_LEVEL": "ERROR", "TRANSFORMERS_VERBOSITY": "error",
        "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1", "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore"}
_state = {"verbose": False}


def quiet_third_party(verbose: bool = False) -> None:
    """Silence the libraries' logs, warnings and progress bars (nothing changes with ``verbose``).

    Call before those libraries are imported (the CLI does, first thing); variables the user has
    set already are left alone.
    """
    _state["verbose"] = verbose
    if verbose:
        return
    for key, value in _ENV.items():
        os.environ.setdefault(key, value)
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", module=rf"{name}(\.|$)")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def is_verbose() -> bool:
    """Whether third-party output is shown (``--verbose``)."""
    return _state["verbose"]


@contextmanager
def native_stderr_captured() -> Iterator[None]:
    """Hold what native code writes to fd 2 during the block; replay it when verbose or on error.

    Python's own ``sys.stderr`` is flushed first so nothing of memlora's is reordered.
    """
    if is_verbose():
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (an embedding host): nothing to capture
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                held.seek(0)
                sys.stderr.write(held.read().decode("utf-8", "replace"))
                sys.stderr.flush()
