"""The one exception type for bad user input.

Anything the user typed, pointed to or dragged that cannot be used raises
InputError with a one-line message naming the problem; the CLI prints it and
exits with code 2, the GUI shows it in a banner.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input from the user: the message is one line and names the problem."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))
