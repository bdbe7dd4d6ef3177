"""The arena's user-facing error (no heavy imports, so the command line can always catch it)."""


class ArenaError(RuntimeError):
    """A problem with the arena's input or environment, stated so the user can fix it."""
