"""The base class of the errors a user can fix: a config key, an input file, a folder."""


class UserError(ValueError):
    """Raised with a message that names the key, file or step at fault and says what to do.

    The command-line entry points print such a message as one line and exit non-zero, without a
    traceback; any other exception is a bug and keeps its traceback.
    """


def _user_errors() -> tuple[type[Exception], ...]:
    from data_prep.index import DataPrepError  # noqa: PLC0415  (the data layer's own user errors)

    return (UserError, DataPrepError)


# What a command-line entry point prints as one line (`error: ...`) and exits non-zero on; any other
# exception is a bug and keeps its traceback.
USER_ERRORS = _user_errors()
