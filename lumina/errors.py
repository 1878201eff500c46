"""Errors a user can act on. Their messages say what was wrong and what is allowed."""


class LuminaError(Exception):
    """Base class: the app shows these messages as they are, never a traceback."""


class InvalidRequestError(LuminaError, ValueError):
    """A setting outside what the model or the project accepts."""


class ModelFilesError(LuminaError):
    """Weights missing, gated, malformed or unsafe to load."""


class NonFiniteLatentsError(LuminaError):
    """NaN or inf appeared while denoising (typically fp16 overflow)."""


class GenerationInterrupted(LuminaError):
    """The user stopped the run; models stay usable."""


class OutputError(LuminaError):
    """An output could not be written (a full disk, a folder in the way); what was there before is unchanged."""
