"""Bearer tokens of the HTTP service: where they come from and how a request is checked.

Entries are `token` or `name:token`, one per line or comma-separated, `#` starts a comment;
an unnamed token is called `token-N` (its position). They come from `--tokens-file` or
`$SERVESWEEP_API_TOKENS`. A presented token is compared with every configured one in
constant time (`hmac.compare_digest`, no early exit), and no token is ever logged or echoed.
"""

from __future__ import annotations

import hmac
import os
import re
from pathlib import Path

TOKENS_ENV = "SERVESWEEP_API_TOKENS"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$")
_TOKEN = re.compile(r"^[\x21-\x7e]{1,512}$")  # printable ASCII, no spaces (RFC 6750 allows a subset)


class TokenConfigError(ValueError):
    """Tokens that cannot be used; the message says where, never what the token is."""


def parse_tokens(text: str, source: str) -> dict[str, str]:
    """{name: token} from the entries in `text` (`source` names them in errors)."""
    tokens: dict[str, str] = {}
    position = 0
    for line_no, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0]
        for raw in line.split(","):
            entry = raw.strip()
            if not entry:
                continue
            position += 1
            where = f"{source}, line {line_no}, entry {position}"
            name, sep, token = entry.partition(":")
            if not sep:
                name, token = f"token-{position}", entry
            name, token = name.strip(), token.strip()
            if not _NAME.match(name):
                raise TokenConfigError(f"{where}: the name must be letters, digits, '_', '.', '@' or '-' (at most 100)")
            if not _TOKEN.match(token):
                raise TokenConfigError(f"{where}: the token must be 1 to 512 printable ASCII characters without spaces")
            if name in tokens:
                raise TokenConfigError(f"{where}: the name {name!r} is given twice")
            if any(hmac.compare_digest(token.encode(), t.encode()) for t in tokens.values()):
                raise TokenConfigError(f"{where}: the same token is given twice")
            tokens[name] = token
    return tokens


def load_tokens(tokens_file: str | Path | None = None, environ: dict[str, str] | None = None) -> dict[str, str]:
    """Tokens from the file, else from $SERVESWEEP_API_TOKENS; TokenConfigError if there are none."""
    env = os.environ if environ is None else environ
    if tokens_file is not None:
        path = Path(tokens_file)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenConfigError(f"cannot read the tokens file {str(path)!r}: {exc.__class__.__name__}") from None
        tokens = parse_tokens(text, f"tokens file {str(path)!r}")
        where = f"the tokens file {str(path)!r}"
    else:
        tokens = parse_tokens(env.get(TOKENS_ENV, ""), f"${TOKENS_ENV}")
        where = f"${TOKENS_ENV}"
    if not tokens:
        raise TokenConfigError(
            f"no API tokens in {where}: give --tokens-file FILE or set {TOKENS_ENV}=name:token[,name:token...] "
            "(the service refuses to run without authentication)"
        )
    return tokens


class TokenChecker:
    """Finds who presents a bearer token, in time independent of which token matched."""

    def __init__(self, tokens: dict[str, str]) -> None:
        if not tokens:
            raise TokenConfigError("at least one API token is needed")
        self._entries = [(name, token.encode("utf-8")) for name, token in tokens.items()]

    def identify(self, authorization: bytes | None) -> str | None:
        """The token's name for an `Authorization: Bearer <token>` header value, else None."""
        if not authorization:
            return None
        scheme, _, presented = authorization.strip().partition(b" ")
        if scheme.lower() != b"bearer":
            return None
        presented = presented.strip()
        found = None
        for name, token in self._entries:  # no early exit: every token is compared
            if hmac.compare_digest(presented, token) and found is None:
                found = name
        return found
