"""Errors raised for input that cannot be assessed.

Each error carries a stable ``code`` (for programs) and the ``field`` it concerns (for people), so
the command line can print one clear line and the service can return a precise 400.
"""

from __future__ import annotations


class InputError(ValueError):
    """The input cannot be assessed as given. Never raised for a clinical verdict."""

    code = "invalid-input"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, field={self.field!r}, message={self.message!r})"


class NotJSONError(InputError):
    code = "not-json"


class DuplicateKeyError(NotJSONError):
    """A JSON object names one key twice: which value was meant cannot be told (a parser keeps the last)."""

    code = "duplicate-key"


class NotFHIRError(InputError):
    """The document is JSON but neither an R4 Bundle nor a case document."""

    code = "not-fhir-r4"


class InvalidCaseError(InputError):
    code = "invalid-case"


class UnitError(InputError):
    """A unit we do not know, or a unit of the wrong kind (a mass where a rate is expected)."""

    code = "unknown-unit"


class WrongDimensionError(UnitError):
    code = "wrong-dimension"


class ImpossibleValueError(InputError):
    """A value no patient can have: a negative, zero, non-finite or absurd weight or dose."""

    code = "impossible-value"
