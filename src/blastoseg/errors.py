"""The package's own exception classes.

Every error a user can cause (bad file, bad shape, bad option) is raised as one of these,
with a message that says what was expected and what to do. The CLI prints the message
without a traceback; the napari widgets show it as a notification.
"""


class BlastosegError(Exception):
    """Base class of every user-facing blastoseg error."""


class ImageReadError(BlastosegError):
    """An image file or frame folder could not be read (missing, corrupt, unsupported)."""


class InvalidImageError(BlastosegError):
    """An image array has a shape, dtype or content the operation cannot use."""


class DatasetFormatError(BlastosegError):
    """A dataset folder or annotation file does not follow the blastoseg dataset format."""


class MemoryLimitError(BlastosegError):
    """The work would need more memory than the machine has free; refused before the work
    (or as soon as the need is known), with what it needs and what to try."""
