"""Errors a user can cause. The app shows them with st.error; CLIs print them and exit 2."""


class SpineInputError(ValueError):
    """A problem with the user's input (file, path, option); the message says what to do."""


class InvalidScanError(SpineInputError):
    """The file is not a usable NIfTI scan (not NIfTI, truncated, wrong dimensions, bad values)."""


class AnnotationError(SpineInputError):
    """A VIA annotation file that cannot be read or does not match its images."""


class MissingWeightsError(SpineInputError):
    """Model weights were asked for but are not in weights/ (we never download at run time)."""
