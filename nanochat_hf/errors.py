"""The one exception type for bad user input (files, keys, flags, config values).

It subclasses `ValueError`, so plain Python callers can catch it as such; the CLI prints it as one
line and exits with status 2 instead of showing a traceback. Messages name the file, key or flag and
say what was expected.
"""


class UserInputError(ValueError):
    pass
