"""User mistakes as one-line errors: the exception types the apps report without a traceback, and the wrapper.

A typo on the command line (an unknown method, a negative image size, k larger than the memory bank) is not a
bug in adzoo, and a 40-line traceback from deep inside Hydra, PIL or torch hides the one fact the user needs.
The apps therefore print ``<prog>: error: <message naming the key>`` and exit with status 2; anything else (a
real bug) keeps its full traceback. ``HYDRA_FULL_ERROR=1`` shows the traceback of user mistakes too.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from typing import Any

from hydra.errors import CompactHydraException, InstantiationException, MissingConfigException

#: exit status of a user mistake (as argparse uses), so scripts can tell it from a crash (1)
USAGE_EXIT = 2
# Set next to HYDRA_FULL_ERROR when the wrapper (not the user) set it; child processes (DDP) inherit both.
_OWN_FULL_ERROR = "ADZOO_CLI_SET_HYDRA_FULL_ERROR"


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key, the value and what is expected."""


class OutputFolderError(PermissionError):
    """The run folder cannot be written (read-only, a file in the way, full disk)."""


#: user-facing error types defined elsewhere, as (module, class name)
_ELSEWHERE = (
    ("adzoo.data.mvtec", "DataError"),
    ("adzoo.models.base", "NonFiniteLossError"),
    ("adzoo.utils.io", "RunLockedError"),
)


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Only modules already imported can have raised their errors, so a config typo never pays for torch."""
    found = [getattr(sys.modules[m], name) for m, name in _ELSEWHERE if m in sys.modules]
    return (ConfigError, OutputFolderError, *found)


#: OS errors that are the environment's state, not a bug: a full disk, a read-only or forbidden folder
_ENVIRONMENT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def _one_line(text: str) -> str:
    text = str(text)
    if "Original Traceback" in text:
        # Re-raised from a DataLoader worker: the original message is the last line, after its type name.
        last = [line for line in text.splitlines() if line.strip()][-1]
        return last.split(": ", 1)[1].strip() if ": " in last else last.strip()
    return "; ".join(part.strip() for part in text.splitlines() if part.strip())


def _failed_mkdir(exc: OSError) -> bool:
    """A folder that could not be created (a file in the way, a parent that cannot exist): where, not a bug."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_name in ("mkdir", "makedirs")


def _os_error_message(exc: OSError) -> str:
    if _failed_mkdir(exc):
        return f"cannot create folder {exc.filename}: {exc.strerror} (set paths.log_dir to a writable folder)"
    where = f" {exc.filename}" if exc.filename else ""
    hint = "free some space" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "check its permissions"
    return f"{exc.strerror or exc}:{where} ({hint}, or set paths.log_dir)"


def user_error_message(exc: BaseException) -> str | None:
    """The one line to show for a user mistake, or None when ``exc`` looks like a bug (keep its traceback)."""
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file and exc.options is not None:
        group, _, choice = exc.missing_cfg_file.rpartition("/")
        return f"{group}={choice}: no such config (available: {', '.join(sorted(exc.options))})"
    if isinstance(exc, InstantiationException):
        # Constructors validate their arguments; Hydra wraps what they raise with its target and full key.
        cause = exc.__cause__
        if isinstance(cause, (ValueError, *_user_error_types())):
            return user_error_message(cause) or _one_line(str(cause))
        return None
    if isinstance(exc, CompactHydraException):
        return _one_line(str(exc).split("Config search path")[0])
    if isinstance(exc, _user_error_types()):
        return _one_line(str(exc))
    if isinstance(exc, OSError) and (exc.errno in _ENVIRONMENT_ERRNOS or _failed_mkdir(exc)):
        return _os_error_message(exc)
    # Wrapped on its way up (an interpolation resolver, a Lightning hook): the user mistake underneath counts.
    # Only explicit chaining (``raise ... from``) and OmegaConf's resolver wrapper: an exception merely raised
    # while another was handled may be a real bug.
    cause = exc.__cause__
    if cause is None and type(exc).__module__.startswith("omegaconf"):
        cause = exc.__context__
    return user_error_message(cause) if cause is not None and cause is not exc else None


class _DropHydraJobLine:
    """stderr without Hydra's "Error executing job with overrides: [...]" line, which repeats the failed job's
    overrides before our own one-line message; every other write passes through."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        if text.startswith("Error executing job with overrides:"):
            return len(text)
        return self.stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def run_app(app: Callable[[], Any], prog: str) -> int:
    """Run a ``hydra.main`` app and return 0; a user mistake is reported in one line on stderr and exits with
    :data:`USAGE_EXIT` here, so shims that call ``main()`` without ``sys.exit`` (``python -m adzoo.train``) fail too."""
    user_wants_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1" and os.environ.get(_OWN_FULL_ERROR) != "1"
    # Hydra re-raises instead of printing its own multi-line report when HYDRA_FULL_ERROR is set.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    os.environ[_OWN_FULL_ERROR] = "0" if user_wants_traceback else "1"
    stderr = sys.stderr
    if not user_wants_traceback:
        sys.stderr = _DropHydraJobLine(stderr)
    try:
        app()
    except Exception as exc:
        message = user_error_message(exc)
        if message is None or user_wants_traceback:
            raise
        print(f"{prog}: error: {message}", file=stderr)
        raise SystemExit(USAGE_EXIT) from None
    finally:
        sys.stderr = stderr
    return 0
