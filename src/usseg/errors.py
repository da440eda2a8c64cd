"""One exception type for bad input, so the CLI can print it without a traceback."""


class UssegError(Exception):
    """Bad input or configuration; the message names the file, image id or parameter."""
