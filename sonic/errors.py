"""The one exception hierarchy of Sonic.

Every error a user can cause or meet derives from :class:`SonicError`. The CLI turns
:class:`UserInputError` into exit code 2 and any other :class:`SonicError` into exit code 1,
printing ``str(error)``: one line that names what is wrong and what to do. Every exception
class of ``sonic``, ``profiler``, ``models`` and ``workloads`` is defined here (the modules
that raise them re-export them under their old names, e.g. ``models.persist.CorruptModelError``);
``sonic/runtime``'s own classes join when that package's split lands.

    class                        exit  raised by / meaning
    SonicError                     1   base of every error Sonic raises on purpose
    ├── UserInputError             2   bad input
    │   ├── AppDefinitionError     2   an application DAG that cannot run
    │   ├── SizeFormatError        2   "50MB"-style sizes
    │   ├── PlanError              2   a plan file that is malformed or does not fit the app or the cluster
    │   │   └── TooManyPlans       2   (planner.bruteforce) the search space exceeds the caller's limit
    │   ├── ClusterFileError       2   a cluster file that is malformed
    │   ├── InputFormatError       2   the application input is not in the format the app reads
    │   ├── InfeasibleError        2   no plan meets the request (with the best alternative)
    │   ├── CorruptProfileError    2   (profiler.store) a profile part file cannot be read
    │   └── CorruptModelError      2   (models.persist) a saved model or manifest cannot be read
    ├── ExecutionError             1   a stage instance failed (names stage, instance, VM)
    │   ├── SelectionError         1   (routing) an edge's selection matched none of the producer's files
    │   ├── ProfilingError         1   (profiler.sweep) a run of the profiling sweep failed
    │   ├── ChildVanished          1   (forking) a forked child ended without reporting
    │   └── ChildFailure           1   (profiler.isolation) what a forked task raised, as plain fields
    ├── NotFittedError             1   (models) predicting before fit
    │   └── ModelsNotFoundError    1   (models.persist) no saved models for the app; also FileNotFoundError
    ├── AppCodeError               1   (appversion) the app's code cannot be installed or imported on a VM
    ├── NetnsError                 1   (emulation.netns) creating or removing the emulated network failed
    ├── SSHDError                  1   (emulation.sshd) the throwaway sshd cannot be set up or started
    ├── S3Error                    1   (emulation.s3store) an S3 error response of the embedded server
    ├── AgentRequestError          1   (runtime.agent RequestError = runtime.client RemoteCallError) a request an agent failed
    │   └── MalformedReplyError    1   (runtime.client) an agent's reply does not match its op's reply type
    └── TransportError             1   a peer (agent, S3, SSH) cannot be reached or misbehaves
        ├── AuthenticationError    1   a peer failed the cluster-secret handshake
        │   └── AuthError          1   (cluster.s3auth) an S3 request the embedded server must refuse
        ├── CorruptObjectError     1   an object's bytes do not match its size/checksum
        ├── MissingObjectError     1   the peer holding an object does not have it (any more)
        ├── PeerClosedError        1   (runtime.protocol) a peer closed between frames: a pooled connection's end
        ├── HostKeyError           1   (cluster.bootstrap) an SSH host key is unknown or does not match
        ├── BootstrapError         1   (cluster.bootstrap) some VMs could not be bootstrapped or stopped
        └── RouteCheckError        1   (emulation.netns) an address does not route through our bridge

The exit code is the class attribute ``exit_code``; ``sonic.cli`` prints the one line and exits
with it. Anything that is not a SonicError is a bug and prints as an internal error (exit 1).
"""

from __future__ import annotations

from typing import Any


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


# --- classes raised by one module each (re-exported there under the same name) ---


class TooManyPlans(PlanError):
    """The search space is larger than the caller's limit."""


class CorruptProfileError(UserInputError):
    """A profile part file cannot be read or lacks required columns; names the file."""


class CorruptModelError(UserInputError):
    """A saved model or manifest cannot be read; names the file."""


class SelectionError(ExecutionError):
    """An edge's output selection matched none of the files its producer wrote."""


class ProfilingError(ExecutionError):
    """A run of the sweep failed. Carries the stage (if known), the size and the cause."""

    def __init__(self, message: str, *, stage: str | None, size: int, runs_recorded: int) -> None:
        super().__init__(message)
        self.stage = stage
        self.size = size
        self.runs_recorded = runs_recorded


class ChildVanished(ExecutionError):
    """The child ended without reporting (killed, out of memory, ``os._exit`` in the task).
    ``how`` says how it ended, e.g. "killed by signal 9"; callers wrap it in their own error."""

    def __init__(self, how: str) -> None:
        super().__init__(how)
        self.how = how


class ChildFailure(ExecutionError):
    """What a forked task raised, carried back as plain fields (exceptions with custom
    constructors do not survive pickling)."""

    def __init__(self, kind: str, message: str, fields: dict[str, object]) -> None:
        super().__init__(message)
        self.kind = kind
        self.fields = fields


class ModelsNotFoundError(NotFittedError, FileNotFoundError):
    """No saved models for the app. Also a FileNotFoundError, so callers that treat "no
    models yet" as a missing file (the planner's untrusted fallback) keep working."""


class AppCodeError(SonicError):
    """The app's code could not be installed or imported on a VM."""


class NetnsError(SonicError):
    """Creating or removing the emulated network failed."""


class SSHDError(SonicError):
    """The throwaway sshd could not be set up or started."""


class S3Error(SonicError):
    """An S3 error response: HTTP status, S3 error code, message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class AuthError(AuthenticationError):
    """A request the server must refuse; ``code`` is the S3 error code to answer with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class HostKeyError(TransportError):
    """The SSH server's host key is unknown or does not match known_hosts."""


class BootstrapError(TransportError):
    """Some VMs could not be bootstrapped (or stopped); ``failures`` maps VM name to error."""

    def __init__(self, message: str, failures: dict[str, SonicError], done: dict[str, Any]) -> None:
        super().__init__(message)
        self.failures = failures
        self.done = done


class RouteCheckError(TransportError):
    """An address does not route through our bridge: sending to it could leave the machine."""


# --- the runtime's (sonic/runtime) ---


class AgentRequestError(SonicError):
    """A request an agent could not serve, the same on both ends of the wire: the agent
    raises it and answers with :meth:`reply`; its client raises the copy :meth:`from_reply`
    rebuilds (``sonic.runtime.agent.request.RequestError`` and
    ``sonic.runtime.client.RemoteCallError`` are this class).

    ``kind`` says whose fault (``instance``, ``fetch``, ``request``, ``input``, ``timeout``,
    ``cancelled``). For ``fetch`` errors ``cause`` says what was wrong with the input
    (``corrupt``, ``missing``, ``unreachable`` source, or ``local`` disk), ``input`` names the
    object key and ``source`` the VM (or ``s3``) it was fetched from, so the coordinator can
    regenerate exactly that object.
    """

    def __init__(self, message: str, kind: str = "request", *, cause: str = "", input: str | None = None,
                 source: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.cause = cause
        self.input = input
        self.source = source

    def reply(self) -> dict[str, Any]:
        """The agent's answer: ``{ok: false, kind, error[, cause, input, source]}``."""
        doc: dict[str, Any] = {"ok": False, "kind": self.kind, "error": str(self)}
        if self.cause:
            doc.update(cause=self.cause, input=self.input, source=self.source)
        return doc

    @classmethod
    def from_reply(cls, peer: str, reply: dict[str, Any], default_kind: str) -> AgentRequestError:
        """The error an agent's ``ok: false`` reply carries, its message naming ``peer``."""

        def text(key: str) -> str | None:
            value = reply.get(key)
            return value if isinstance(value, str) else None

        return cls(f"agent {peer}: {reply.get('error', 'unknown error')}", str(reply.get("kind", default_kind)),
                   cause=text("cause") or "", input=text("input"), source=text("source"))


class MalformedReplyError(AgentRequestError):
    """An agent's reply that does not match its op's reply type (``sonic.runtime.messages``):
    a bug or another version of sonic on the VM, never the user's input."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "request")


class PeerClosedError(TransportError):
    """The peer closed the connection cleanly between two frames (not inside one): the normal
    end of a pooled connection, which a server need not log as a failure."""
