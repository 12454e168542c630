"""The one exception type that reaches the user as a single line."""


class UserError(Exception):
    """Bad input or a missing asset: the message says what is wrong and what to do.

    The CLI prints it as one line and exits non-zero without a traceback; anything else
    that escapes is a bug in this tool and keeps its traceback.
    """
