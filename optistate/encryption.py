"""Sensitive config values at rest: Fernet keys, the stored form, and the table-wide operations.

With a key configured (``OPTISTATE_SECRET_KEY``, or ``connect(secret_key=...)``),
every sensitive value is stored as ``optistate:enc:v1:<key id>:<Fernet token>``.
The key id is the first 8 hex digits of the SHA-256 of the key's 32 bytes (the
key's url-safe base64 decoded), so a stored value names the key that opens it,
and the id says nothing useful about the key. Several keys may be configured,
newest first: values are encrypted with the newest and read with whichever
key their id names. Without a key, values are stored in plain text.

The cipher is ``cryptography``'s Fernet (AES-128-CBC with HMAC-SHA256, a
random IV and a timestamp per token), from the ``secrets`` extra:
``pip install 'optistate[secrets]'``. It is imported only when a key is given.

:func:`status`, :func:`rotate` and :func:`encrypt` work on a whole
``agent_configs`` table; ``optistate secrets`` runs them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .database import is_sqlite, write_transaction
from .errors import MASK, ConfigurationError, SecretKeyError, ValidationError

if TYPE_CHECKING:
    from .models import AgentConfig

__all__ = ["ENV_VAR", "PREFIX", "Keyring", "key_id", "new_key", "sealed_key_id", "status", "rotate", "encrypt"]

ENV_VAR = "OPTISTATE_SECRET_KEY"
PREFIX = "optistate:enc:v1:"
_SEALED = re.compile(r"optistate:enc:v1:([0-9a-f]{8}):([A-Za-z0-9_-]+={0,2})\Z")
_EXTRA = "pip install 'optistate[secrets]'"


def _fernet(setting: str = ENV_VAR) -> Any:
    """``cryptography.fernet``, or a clear error naming the extra."""
    try:
        from cryptography import fernet
    except ImportError:
        raise ConfigurationError(setting, MASK, f"a secret key needs the cryptography package: {_EXTRA}") from None
    return fernet


def key_id(key: str | bytes) -> str:
    """The id of a Fernet key: the first 8 hex digits of the SHA-256 of its 32 bytes."""
    raw = base64.urlsafe_b64decode(key.encode() if isinstance(key, str) else key)
    return hashlib.sha256(raw).hexdigest()[:8]


def new_key() -> str:
    """A new random Fernet key (url-safe base64), for ``OPTISTATE_SECRET_KEY``."""
    return str(_fernet().Fernet.generate_key().decode())


def sealed_key_id(text: str) -> str | None:
    """The key id of a value stored encrypted, or None for plain text."""
    match = _SEALED.match(text) if isinstance(text, str) else None
    return match.group(1) if match else None


class Keyring:
    """The configured keys, newest first; empty (and false) when none is configured.

    :param keys: Fernet keys (url-safe base64 text), newest first.
    :param setting: where the keys came from, for error messages.
    :raises ConfigurationError: a key that is not a Fernet key, two keys with one
        id, or keys without the ``cryptography`` package. The message never holds a key.
    """

    def __init__(self, keys: Sequence[str | bytes] = (), *, setting: str = "secret_key"):
        self._ciphers: dict[str, Any] = {}
        self._newest: Any = None
        if not keys:
            return
        fernet = _fernet(setting)
        for position, key in enumerate(keys):
            try:
                cipher, ident = fernet.Fernet(key), key_id(key)
            except (ValueError, TypeError, binascii.Error):
                raise ConfigurationError(
                    f"{setting}[{position}]", MASK, "not a Fernet key (32 url-safe base64-encoded bytes; "
                    "`optistate secrets new-key` makes one)") from None
            if ident in self._ciphers:
                raise ConfigurationError(f"{setting}[{position}]", MASK, f"key {ident} is given twice")
            self._ciphers[ident] = cipher
        self._newest = fernet.MultiFernet(list(self._ciphers.values()))

    @classmethod
    def from_setting(cls, secret_key: str | Sequence[str] | None = None) -> Keyring:
        """The keys given, else those of ``$OPTISTATE_SECRET_KEY``, newest first.

        A string may hold several keys, comma-separated (a Fernet key has no comma).
        """
        setting = "secret_key" if secret_key is not None else ENV_VAR
        if secret_key is None:
            secret_key = os.environ.get(ENV_VAR, "")
        if isinstance(secret_key, bytes):
            secret_key = secret_key.decode("ascii", "replace")
        if isinstance(secret_key, str):
            secret_key = [k.strip() for k in secret_key.split(",") if k.strip()]
        return cls(list(secret_key), setting=setting)

    @property
    def ids(self) -> tuple[str, ...]:
        """The key ids, newest first."""
        return tuple(self._ciphers)

    @property
    def newest(self) -> str | None:
        return next(iter(self._ciphers), None)

    def __bool__(self) -> bool:
        return bool(self._ciphers)

    def __repr__(self) -> str:
        return f"<Keyring {', '.join(self.ids) or 'without keys'}>"

    def seal(self, text: str) -> str:
        """``text`` encrypted with the newest key, in its stored form."""
        token = self._newest.encrypt(text.encode("utf-8", "surrogatepass")).decode()
        return f"{PREFIX}{self.newest}:{token}"

    def stored_form(self, text: str, *, key: str, sensitive: bool) -> str:
        """What is stored for ``text``: encrypted when sensitive and a key is configured, else ``text``.

        :raises ValidationError: ``text`` would be stored in plain text but looks
            encrypted, so that it could not be read back as it is.
        """
        if sensitive and self:
            return self.seal(text)
        if sealed_key_id(text) is not None:
            raise ValidationError(key, text, f"looks like an encrypted value ({PREFIX}...) and would be stored "
                                             "in plain text", sensitive=sensitive)
        return text

    def open(self, stored: str, *, key: str) -> str:
        """The plain text of a stored value; plain text comes back as it is.

        :param key: the config key, named by the error.
        :raises SecretKeyError: no configured key has the value's key id, or that key does not open it.
        """
        ident = sealed_key_id(stored)
        if ident is None:
            return stored
        cipher = self._ciphers.get(ident)
        if cipher is None:
            configured = f"the configured keys are {', '.join(self.ids)}" if self else "no secret key is configured"
            raise SecretKeyError(key, ident, f"{configured}; give key {ident} in {ENV_VAR} or connect(secret_key=...)")
        token = stored[len(PREFIX) + len(ident) + 1:]
        try:
            return str(cipher.decrypt(token.encode()).decode("utf-8", "surrogatepass"))
        except (_fernet().InvalidToken, UnicodeDecodeError):
            raise SecretKeyError(key, ident, "that key does not open it: the stored value is damaged") from None

    def can_open(self, stored: str) -> bool:
        """Whether ``stored`` is encrypted with a configured key."""
        return sealed_key_id(stored) in self._ciphers


def _sensitive(model: type[AgentConfig]) -> Any:
    return model.select(model.id, model.config_key, model.config_value).where(model.is_sensitive == True)  # noqa: E712


def status(model: type[AgentConfig]) -> dict[str | None, int]:
    """The sensitive values per key id; the key None counts those in plain text."""
    counts: Counter[str | None] = Counter()
    for (value,) in _sensitive(model).select(model.config_value).tuples().iterator():
        counts[sealed_key_id(value)] += 1
    return dict(counts)


def _rewrite(model: type[AgentConfig], keyring: Keyring, sealed: bool) -> int:
    """Re-encrypt the encrypted values (``sealed``) or encrypt the plain ones, in one write transaction."""
    if not keyring:
        raise ConfigurationError(ENV_VAR, None, "no secret key is configured; set it to the key to encrypt with")
    database, changed = model._meta.database, 0
    with write_transaction(database):
        query = _sensitive(model)
        rows = list((query if is_sqlite(database) else query.for_update()).tuples())
        for ident, key, stored in rows:
            found = sealed_key_id(stored)
            if found is None if sealed else found is not None:
                continue
            if found == keyring.newest:
                continue
            text = keyring.seal(keyring.open(stored, key=key))
            model.update(config_value=text).where(model.id == ident).execute()
            changed += 1
    return changed


def rotate(model: type[AgentConfig], keyring: Keyring) -> int:
    """Re-encrypt every encrypted sensitive value with the newest key, in one transaction; return how many.

    :raises SecretKeyError: a value whose key is not configured; nothing is changed.
    """
    return _rewrite(model, keyring, sealed=True)


def encrypt(model: type[AgentConfig], keyring: Keyring) -> int:
    """Encrypt every sensitive value stored in plain text with the newest key, in one transaction; return how many."""
    return _rewrite(model, keyring, sealed=False)
