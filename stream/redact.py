"""Secrets out of every output: the one redaction of URLs (and of text that holds URLs) the monitor shows."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

MASK = "***"
# query parameters whose value is a secret: tokens, keys, passwords, signatures, SRT's passphrase and streamid
_SECRET_PARAM = re.compile(
    r"(token|key|pass|pwd|secret|sig|auth|credential|session|streamid|jwt|code)", re.IGNORECASE
)
# a URL inside free text (ffmpeg and OS errors, log lines): scheme://... up to a space or quote
_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]{1,15}://[^\s'\"<>()\[\]]+")
# the stream key is the last path segment of an RTMP URL (rtmp://host/app/KEY)
_KEY_IN_PATH = ("rtmp", "rtmps", "rtmpt", "rtmpe", "rtmpte", "rtmpts")


def redact_url(url: str) -> str:
    """`url` with its userinfo, secret-named query values and RTMP stream key replaced by ***.

    Anything that does not parse as a URL comes back unchanged (a file path holds no credentials)."""
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return MASK  # unparseable: show nothing rather than a secret
    netloc = parts.netloc
    if "@" in netloc:
        hostport = netloc.rsplit("@", 1)[1]
        netloc = f"{MASK}@{hostport}"
    path = parts.path
    if parts.scheme.lower() in _KEY_IN_PATH and path.count("/") >= 2 and path.rstrip("/").rsplit("/", 1)[-1]:
        path = path.rstrip("/").rsplit("/", 1)[0] + "/" + MASK
    query = parts.query
    fragment = MASK if parts.fragment and _SECRET_PARAM.search(parts.fragment) else parts.fragment
    if parts.scheme.lower() == "srt" and parts.fragment:  # an SRT streamid often holds '#!::': not a fragment
        query, fragment = f"{query}#{parts.fragment}", ""
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if pairs:
            query = "&".join(
                f"{quote(k, safe='')}={MASK if _SECRET_PARAM.search(k) else quote(v, safe='/:')}" for k, v in pairs
            )
        else:
            query = MASK
    return urlunsplit((parts.scheme, netloc, path, query, fragment))


def redact_text(text: str) -> str:
    """Every URL inside `text` redacted (error messages, log lines)."""
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


def url_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """(url without userinfo, (user, password) or None): credentials travel as Basic auth, not in the URL."""
    from urllib.parse import unquote

    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    hostport = parts.netloc.rsplit("@", 1)[1]
    bare = urlunsplit((parts.scheme, hostport, parts.path, parts.query, parts.fragment))
    return bare, (unquote(parts.username or ""), unquote(parts.password or ""))


# input options whose whole value may carry a secret: HTTP headers (Authorization, cookies), passwords, keys
_SECRET_OPTION = re.compile(r"(header|cookie|auth|pass|pwd|secret|token|key|credential|user_agent)", re.IGNORECASE)


def redact_options(options: dict[str, str]) -> dict[str, str]:
    """A source's ffmpeg/PyAV `options` as answers show them: values of secret-looking options masked, URLs in
    the others redacted."""
    return {k: MASK if _SECRET_OPTION.search(k) else redact_text(v) for k, v in options.items()}
