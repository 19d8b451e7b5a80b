"""Errors the use cases raise; the CLI and the bot map each to a message a person understands."""

from __future__ import annotations


class MedCrowdError(Exception):
    """Base of every error meant for the user; its message is shown as is."""


class InvalidBox(MedCrowdError):
    """A prompt box that is empty, non-finite or outside its image."""


class InvalidInput(MedCrowdError):
    """An input file or argument that cannot be used; the message says why."""


class CampaignNotFound(MedCrowdError):
    """No campaign of that name."""


class StaleTask(MedCrowdError):
    """A button for a crop that is finished, no longer leased to this volunteer, or unknown."""


class NoConsent(MedCrowdError):
    """The volunteer has not agreed to the terms yet; nothing is served before consent."""


class NoWork(MedCrowdError):
    """No crop is open for this volunteer right now."""


class NotAllowed(MedCrowdError):
    """The user's role does not allow this action."""
