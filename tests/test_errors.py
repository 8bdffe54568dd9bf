"""User mistakes become one line; bugs keep their traceback (src/adzoo/errors.py)."""

from __future__ import annotations

import errno

import pytest

from adzoo.data.mvtec import DataError
from adzoo.errors import ConfigError, user_error_message


def test_a_data_loader_worker_error_is_its_original_message() -> None:
    """torch re-raises a worker's exception with the worker's whole traceback in the message (2,400 chars)."""
    text = (
        "Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n    raise DataError(...)\n'
        "adzoo.data.mvtec.DataError: cannot read image /d/a.png: truncated (expected a readable image file)\n"
    )
    assert (
        user_error_message(DataError(text)) == "cannot read image /d/a.png: truncated (expected a readable image file)"
    )


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_environment_os_errors_are_one_line(code: int) -> None:
    message = user_error_message(OSError(code, "reason", "/logs/run/results.json"))
    assert message is not None and "/logs/run/results.json" in message and "paths.log_dir" in message


def _wrapped(explicit: bool) -> BaseException:
    try:
        try:
            raise ConfigError("ckpt_path=x: no such checkpoint")
        except ConfigError as exc:
            if explicit:
                raise RuntimeError("wrapped") from exc
            raise KeyError("raised while handling it")  # noqa: B904 - implicit chaining is the point
    except (RuntimeError, KeyError) as outer:
        return outer
    raise AssertionError("unreachable")


def test_a_user_mistake_wrapped_by_a_resolver_or_hook_is_still_one_line() -> None:
    assert user_error_message(_wrapped(explicit=True)) == "ckpt_path=x: no such checkpoint"


def test_bugs_keep_their_traceback() -> None:
    assert user_error_message(KeyError("state_dict")) is None
    assert user_error_message(OSError(errno.ENOENT, "missing", "/x")) is None  # not from a mkdir: a bug
    assert user_error_message(_wrapped(explicit=False)) is None
