"""The one error type the library raises for bad input, so callers can catch it cleanly."""


class VQCodecError(Exception):
    """A user-facing failure: unreadable image, corrupt bitstream, wrong model, bad option."""


class VQCodecWarning(UserWarning):
    """Something was decoded, but not all of it: e.g. damaged tiles skipped by a salvage decode."""
