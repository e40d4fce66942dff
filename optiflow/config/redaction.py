"""Hiding credentials in anything printed, logged or written: every URI passes through ``redact_uri``, and
``install_log_redaction`` applies it to every log record of the process (Prefect's, MLflow's, uvicorn's included)."""

from __future__ import annotations

import logging
import re

# scheme://user:password@host: the user part may hold '@' (user@corp), the password anything but whitespace, so
# everything up to the LAST '@' of the word is hidden (a password with '@', '/', ':' or '#' in it included).
_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/\s]*?:)\S*@")
# ?password=..., &sslpassword=..., ;token=..., api_key, secret, credential, auth: the value up to the next separator.
_SECRET_QUERY = re.compile(
    r"([?&;][^=&;\s?#]*?(?:pass(?:word)?|pwd|secret|token|api[_-]?key|credential|auth)[^=&;\s?#]*=)[^&;\s#'\"]*",
    re.IGNORECASE,
)


def redact_uri(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` and every secret-looking query value
    (``?password=``, ``&token=``, ...) replaced by ``***``."""
    return _SECRET_QUERY.sub(r"\1***", _USERINFO.sub(r"\1***@", text))


def install_log_redaction() -> None:
    """Redact every log record when it is created, before any handler formats, sends or stores it: the message,
    its arguments and its traceback text."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "redacting", False):
        return

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        message = record.getMessage()
        redacted = redact_uri(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            if redact_uri(text) != text:
                record.exc_text, record.exc_info = redact_uri(text), None
        return record

    factory.redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
