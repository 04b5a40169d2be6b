"""Exception types raised by parrot. The C extension raises these (it imports this module at start-up)."""


class ParrotError(Exception):
    """Base class of parrot's own errors."""


class ModelError(ParrotError, ValueError):
    """A model file or checkpoint is missing, truncated, corrupt, foreign or inconsistent."""


class ImageError(ParrotError, ValueError):
    """An image cannot be decoded, or is refused (empty, corrupt, unsupported, too large)."""


class TokenizerError(ParrotError, ValueError):
    """Tokenizer data is unsupported or inconsistent."""
