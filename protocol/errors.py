"""Errors of the profile: each names the field, the value and the rule broken."""

from __future__ import annotations

# OpenADR 2.0b response codes a profile error maps to (2.0b spec, table of eiResponse codes).
OADR_INVALID_DATA = 454
OADR_SIGNAL_NOT_SUPPORTED = 460
OADR_NOT_RECOGNIZED = 453
OADR_INVALID_ID = 452
OADR_TARGET_MISMATCH = 462
OADR_NOT_REGISTERED = 463


class ProfileError(ValueError):
    """A message is not valid under the profile.

    ``field`` is a dotted path into the message, ``response_code`` the OpenADR 2.0b code a VEN or VTN
    answers with when it rejects the message for this reason.
    """

    def __init__(self, field: str, reason: str, *, response_code: int = OADR_INVALID_DATA) -> None:
        self.field = field
        self.reason = reason
        self.response_code = response_code
        super().__init__(f"{field}: {reason}")
