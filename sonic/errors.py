"""The one exception hierarchy of Sonic.

Every error a user can cause or meet derives from :class:`SonicError`. The CLI turns
:class:`UserInputError` into exit code 2 and any other :class:`SonicError` into exit code 1,
printing ``str(error)``: one line that names what is wrong and what to do.

    SonicError
    ├── UserInputError           bad input: exit code 2
    │   ├── AppDefinitionError   an application DAG that cannot run
    │   ├── SizeFormatError      "50MB"-style sizes
    │   ├── PlanError            a plan file that does not fit the app or the cluster
    │   ├── ClusterFileError     a cluster file that is malformed
    │   ├── InputFormatError     the application input is not in the format the app reads
    │   └── InfeasibleError      no plan meets the request (with the best alternative)
    ├── ExecutionError           a stage instance failed (names stage, instance, VM)
    ├── NotFittedError           (models) predicting before fit
    ├── TransportError           a peer (agent, S3, SSH) cannot be reached or misbehaves
    │   ├── AuthenticationError  a peer failed the cluster-secret handshake
    │   ├── CorruptObjectError   an object's bytes do not match its size/checksum
    │   └── MissingObjectError   the peer holding an object does not have it (any more)
"""

from __future__ import annotations


class SonicError(Exception):
    """Base of every error Sonic raises on purpose."""

    exit_code = 1


class UserInputError(SonicError):
    """The user gave something malformed; the message says what and how to fix it."""

    exit_code = 2


class AppDefinitionError(UserInputError):
    """An application definition is invalid (cycle, unknown stage, bad pattern, ...)."""


class SizeFormatError(UserInputError, ValueError):
    """A size string such as ``50MB`` could not be parsed."""


class PlanError(UserInputError):
    """A plan does not fit the application or the cluster."""


class ClusterFileError(UserInputError):
    """A cluster file is malformed or names things that do not exist."""


class InputFormatError(UserInputError, ValueError):
    """The application input is not in the format the app reads. Raised by stage functions;
    a run stops at once with exit code 2 (retrying cannot help)."""


class InfeasibleError(UserInputError):
    """No plan satisfies the request; the message names the best feasible alternative."""


class ExecutionError(SonicError):
    """A stage instance failed while running."""


class NotFittedError(SonicError, ValueError):
    """A model was asked to predict before :meth:`fit` was called."""


class TransportError(SonicError):
    """A peer could not be reached or broke the protocol. The message names the peer."""


class AuthenticationError(TransportError):
    """A peer failed the cluster-secret handshake."""


class CorruptObjectError(TransportError):
    """An object's bytes failed their size or checksum check. The object must be fetched
    again or regenerated from its producer's inputs; it is never consumed."""


class MissingObjectError(TransportError):
    """The agent or bucket that should hold an object does not have it."""
