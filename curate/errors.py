"""Errors curate raises on bad input. The CLI prints each as one line and exits non-zero."""


class CurateError(Exception):
    """A user-facing error: the message is one line naming the file, row and field at fault."""


class RefError(CurateError):
    """A ref that does not resolve, or a dataset name / tag that is not allowed."""


class InputError(CurateError):
    """Input data that cannot be read or normalised."""


class IntegrityError(CurateError):
    """A stored file whose bytes no longer match its manifest."""
