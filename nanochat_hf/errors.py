"""The one exception type for bad user input (files, keys, flags, config values).

It subclasses `ValueError`, so plain Python callers can catch it as such; the CLI prints it as one
line and exits with status 2 instead of showing a traceback. Messages name the file, key or flag and
say what was expected.
"""

import os
import sys


class UserInputError(ValueError):
    pass


class RunStoppedError(RuntimeError):
    """A run stopped by something outside the settings (a full disk, weights or a loss gone non-finite).

    Recipes print it as one line (what happened, which file, which checkpoint is intact) and exit with
    status 1; nothing half-written is left under a final name.
    """


# Exit statuses: bad input (as argparse uses for a bad flag), and a run stopped by its circumstances.
USER_ERROR_STATUS = 2
RUN_STOPPED_STATUS = 1
# Set to 1 to see the traceback behind a one-line error of a recipe (the CLI has --debug).
DEBUG_ENVIRONMENT_VARIABLE = "NANOCHAT_HF_DEBUG"


def run_reporting_errors(function, prog: str, debug: bool = False) -> int:
    """Call `function()`; a `UserInputError` or `RunStoppedError` becomes one line on stderr and an exit
    status (2 or 1) instead of a traceback, unless `debug` (or NANOCHAT_HF_DEBUG=1) asks for the traceback."""
    debug = debug or os.environ.get(DEBUG_ENVIRONMENT_VARIABLE, "") not in ("", "0")
    try:
        return int(function() or 0)
    except (UserInputError, RunStoppedError) as err:
        if debug:
            raise
        print(f"{prog}: error: {err}", file=sys.stderr)
        return USER_ERROR_STATUS if isinstance(err, UserInputError) else RUN_STOPPED_STATUS
