"""``python -m tests.support.lost_ctrl_c MODE [--plain]``: a one-command application under
edgenas' root group in which Ctrl-C comes where Python or a library could lose it. With
``--plain`` the interpreter keeps its own SIGINT handler instead of the one ``main()``
installs. Each mode prints "finished" if it runs to its end.

- pyrun: inside code run through ``PyRun_String`` (as a library's import from a string is);
- weakref: inside a weak reference's callback, where Python can only print an exception;
- cleared: caught and dropped by the code it interrupted;
- import: turned into ``ImportError: initialization failed``, as pybind11 does with one in
  a module's initialisation.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import sys
import time
import weakref

import typer

from edgenas.cli.user_errors import UserErrorsGroup
from edgenas.ctrl_c import exit_130_on_ctrl_c

PY_FILE_INPUT = 257  # Python.h's Py_file_input

app = typer.Typer(cls=UserErrorsGroup)


class _Object:
    pass


@app.command()
def probe(mode: str) -> None:
    if mode == "pyrun":
        run_string = ctypes.pythonapi.PyRun_String
        run_string.restype = ctypes.py_object
        run_string.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.py_object, ctypes.py_object]
        code = b"import signal\nsignal.raise_signal(signal.SIGINT)\n"
        run_string(code, PY_FILE_INPUT, {"__builtins__": __builtins__}, {})
    elif mode == "weakref":
        thing = _Object()
        ref = weakref.ref(thing, lambda _: signal.raise_signal(signal.SIGINT))
        del thing
        time.sleep(2)  # where a Ctrl-C delivered again stops the command
        del ref
    elif mode == "cleared":
        with contextlib.suppress(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    elif mode == "import":
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt as exc:
            raise ImportError("initialization failed") from exc
    else:
        raise ValueError(mode)
    print("finished")


@app.command()
def other() -> None:  # with one command typer would run it without the group
    pass


if __name__ == "__main__":
    if "--plain" in sys.argv:
        sys.argv.remove("--plain")
    else:
        exit_130_on_ctrl_c()
    app()
