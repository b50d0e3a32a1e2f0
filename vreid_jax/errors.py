"""The base class of the errors a user can fix: a config key, an input file, a folder."""


class UserError(ValueError):
    """Raised with a message that names the key, file or step at fault and says what to do.

    The command-line entry points print such a message as one line and exit non-zero, without a
    traceback; any other exception is a bug and keeps its traceback.
    """
