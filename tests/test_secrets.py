"""Sensitive config values at rest (issue 13), on both backends: encrypted writes, plain reads,
SecretKeyError, ``optistate secrets`` (status, encrypt, rotate) and export/import."""
from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

import optistate
from optistate import Config, demo, hookimpl
from optistate.cli import cli
from optistate.encryption import ENV_VAR, PREFIX, Keyring, key_id, new_key
from optistate.errors import ConfigurationError, SecretKeyError, ValidationError

SECRET = "sk-live-9f8e7d6c5b4a-Ω"
DEFAULT = "default-token-3141592653"
OLD, NEW = new_key(), new_key()


@pytest.fixture(autouse=True)
def no_key_in_the_environment(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


class Vault:
    """An agent type with a sensitive default, and a validator that records what it is shown."""

    def __init__(self):
        self.seen = []

    @hookimpl
    def register_agent_types(self, register):
        register("vault", configs=[Config("token", DEFAULT, "string", sensitive=True), Config("n", 1, "integer")])

    @hookimpl
    def validate_config(self, agent_type, key, value):
        self.seen.append((key, value))
        return None


def raw_rows(store, sensitive=True):
    """(config_key, config_value) of the sensitive rows (or the others), by raw SQL."""
    sql = f"SELECT config_key, config_value FROM agent_configs WHERE is_sensitive = {store.database.param}"
    return store.database.execute_sql(sql, (sensitive,)).fetchall()


def raw_values(store, sensitive=True):
    return dict(raw_rows(store, sensitive))


def holds_no_piece_of(stored, plain):
    """No 4-character run of ``plain`` (nor its base64) occurs in ``stored``."""
    runs = {plain[i:i + 4] for i in range(len(plain) - 3)}
    encoded = base64.b64encode(plain.encode()).decode()
    return not any(run in stored for run in runs) and encoded[:8] not in stored


def run(url, *args, key=None):
    return CliRunner().invoke(cli, ["--database", url, *args], env={ENV_VAR: key} if key else {})


def ok(url, *args, key=None):
    result = run(url, *args, key=key)
    assert result.exit_code == 0, result.stderr
    return result.stdout


def refused(url, *args, key=None):
    result = run(url, *args, key=key)
    assert result.exit_code == 1 and result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    return result.stderr


@pytest.fixture
def seeded(db_url):
    """The demo's agents, and a sensitive key on the cost agent, stored with no key configured."""
    with optistate.connect(db_url) as store:
        demo.run(store)
        store.agent("Cost Optimizer").config.set("api_key", SECRET, config_type="string", is_sensitive=True)
    return db_url


def test_with_a_key_a_raw_select_sees_only_ciphertext_and_the_sdk_plain_text(db_url):
    vault = Vault()
    with optistate.connect(db_url, secret_key=NEW) as store:
        store.plugins.register(vault, name="vault")
        first, second = store.start_agent("vault", "one"), store.start_agent("vault", "two")
        first.config.set("api_key", SECRET, config_type="string", is_sensitive=True)
        first.config.set("pin", 4242, config_type="integer", is_sensitive=True)
        assert ("api_key", SECRET) in vault.seen and ("pin", 4242) in vault.seen  # validate_config sees plain text
        stored = raw_rows(store)
        assert sorted(key for key, _ in stored) == ["api_key", "pin", "token", "token"]  # a default per agent
        for _, value in stored:
            assert value.startswith(f"{PREFIX}{key_id(NEW)}:")
            assert all(holds_no_piece_of(value, plain) for plain in (SECRET, DEFAULT, "4242"))
        # the cached one-statement start (PostgreSQL) encrypts each start's default anew
        tokens = {first.config.entry("token").config_value, second.config.entry("token").config_value}
        assert len(tokens) == 2
        assert (first.config["token"], second.config["token"]) == (DEFAULT, DEFAULT)
        assert (first.config["api_key"], first.config["pin"], first.config["n"]) == (SECRET, 4242, 1)
        assert first.config.entry("api_key").key_id == key_id(NEW)
        assert raw_values(store, sensitive=False) == {"n": "1"}
        for text in (repr(first.config), repr(first.config.entries()), repr(store.keyring)):
            assert SECRET not in text and NEW not in text
    assert ok(db_url, "config", "get", "one", "api_key", "--reveal", key=NEW) == f"{SECRET}\n"
    listed = json.loads(ok(db_url, "config", "list", "one", "--json", "--reveal", key=NEW))
    api_key = {c["key"]: c for c in listed}["api_key"]
    assert (api_key["value"], api_key["encrypted"], api_key["key_id"]) == (SECRET, True, key_id(NEW))


def test_a_wrong_key_is_a_one_line_secret_key_error_naming_the_key_id(seeded):
    ok(seeded, "secrets", "encrypt", key=OLD)
    with optistate.connect(seeded, secret_key=NEW) as store:
        config = store.agent("Cost Optimizer").config
        with pytest.raises(SecretKeyError) as raised:
            config["api_key"]
        error = raised.value
        assert error.key_id == key_id(OLD) and key_id(OLD) in str(error) and key_id(NEW) in str(error)
        assert "\n" not in str(error) and SECRET not in str(error) and OLD not in str(error)
        assert error.__cause__ is None and error.__context__ is None
        assert config["cost_threshold_usd"] == 1000  # other values still read
    with optistate.connect(seeded) as store:
        with pytest.raises(SecretKeyError, match=f"encrypted with key {key_id(OLD)}: no secret key is configured"):
            store.agent("Cost Optimizer").config.get("api_key")
    err = refused(seeded, "config", "get", "Cost Optimizer", "api_key", "--reveal", key=NEW)
    assert key_id(OLD) in err and SECRET not in err
    masked = ok(seeded, "config", "list", "Cost Optimizer")  # masked output needs no key
    assert f"***    yes        key {key_id(OLD)}" in masked and SECRET not in masked


def test_without_a_key_values_are_plain_and_config_list_says_so(seeded):
    with optistate.connect(seeded) as store:
        assert raw_values(store) == {"api_key": SECRET}
        with pytest.raises(ValidationError, match="looks like an encrypted value"):
            store.agent("Cost Optimizer").config.set("api_key", f"{PREFIX}{key_id(OLD)}:gAAAAA")
    assert "api_key                    string  ***    yes        no" in ok(seeded, "config", "list", "Cost Optimizer")
    listed = json.loads(ok(seeded, "config", "list", "Cost Optimizer", "--json"))
    assert {c["key"]: (c["encrypted"], c["key_id"]) for c in listed}["api_key"] == (False, None)


def test_values_stored_before_encryption_read_after_secrets_encrypt(seeded):
    with optistate.connect(seeded) as store:
        store.agent("Cost Optimizer").config.set("pin", 7, config_type="integer", is_sensitive=True)
    status = json.loads(ok(seeded, "secrets", "status", "--json"))
    assert status == {"keys": [], "plain_text": 2}
    assert refused(seeded, "secrets", "encrypt") == (
        f"error: {ENV_VAR}=None: no secret key is configured; set it to the key to encrypt with\n")
    assert ok(seeded, "secrets", "encrypt", key=OLD) == f"encrypted 2 sensitive value(s) with key {key_id(OLD)}\n"
    assert ok(seeded, "secrets", "encrypt", key=OLD) == f"encrypted 0 sensitive value(s) with key {key_id(OLD)}\n"
    status = json.loads(ok(seeded, "secrets", "status", "--json", key=OLD))
    assert status == {"keys": [{"key_id": key_id(OLD), "values": 2, "configured": True, "newest": True}],
                      "plain_text": 0}
    with optistate.connect(seeded, secret_key=OLD) as store:
        assert all(holds_no_piece_of(v, SECRET) for v in raw_values(store).values())
        config = store.agent("Cost Optimizer").config
        assert (config["api_key"], config["pin"]) == (SECRET, 7)


def test_after_rotate_the_old_key_alone_cannot_read_and_the_new_one_can(seeded):
    ok(seeded, "secrets", "encrypt", key=OLD)
    with optistate.connect(seeded, secret_key=OLD) as store:
        before = raw_values(store)
    out = ok(seeded, "secrets", "rotate", key=f"{NEW}, {OLD}")
    assert out == f"re-encrypted 1 sensitive value(s) with key {key_id(NEW)}\n"
    with optistate.connect(seeded, secret_key=NEW) as store:
        after = raw_values(store)
        assert after["api_key"] != before["api_key"] and after["api_key"].startswith(f"{PREFIX}{key_id(NEW)}:")
        assert store.agent("Cost Optimizer").config["api_key"] == SECRET
    with optistate.connect(seeded, secret_key=OLD) as store:
        with pytest.raises(SecretKeyError, match=key_id(NEW)):
            store.agent("Cost Optimizer").config["api_key"]
    status = json.loads(ok(seeded, "secrets", "status", "--json", key=NEW))
    assert status["keys"] == [{"key_id": key_id(NEW), "values": 1, "configured": True, "newest": True}]


def test_rotate_is_one_transaction(seeded):
    """A value whose key is not configured stops the rotation, and nothing is re-encrypted."""
    ok(seeded, "secrets", "encrypt", key=OLD)
    with optistate.connect(seeded, secret_key=NEW) as store:
        store.agent("Application Monitor").config.set("token", "t-9", config_type="string", is_sensitive=True)
        before = raw_values(store)
    third = new_key()
    err = refused(seeded, "secrets", "rotate", key=f"{third},{NEW}")
    assert key_id(OLD) in err and "api_key" in err
    with optistate.connect(seeded, secret_key=[NEW, OLD]) as store:
        assert raw_values(store) == before


@pytest.mark.parametrize("decrypt", [False, True])
def test_export_round_trip(seeded, tmp_path, sqlite_url, decrypt):
    ok(seeded, "secrets", "encrypt", key=OLD)
    path = str(tmp_path / "out.jsonl")
    ok(seeded, "export", path, *(["--decrypt"] if decrypt else []), key=OLD)
    text = open(path, encoding="utf-8").read()
    assert (SECRET in text) is decrypt and (f"{PREFIX}{key_id(OLD)}:" in text) is not decrypt
    target = str(tmp_path / "imported.db")
    ok(f"sqlite:///{target}", "import", path)  # no key: the import keeps what it reads
    with optistate.connect(f"sqlite:///{target}") as imported, optistate.connect(seeded, secret_key=OLD) as source:
        stored = raw_values(imported)["api_key"]
        assert stored == (SECRET if decrypt else raw_values(source)["api_key"])
    with optistate.connect(f"sqlite:///{target}", secret_key=OLD) as imported:
        assert imported.agent("Cost Optimizer").config["api_key"] == SECRET
    if not decrypt:
        assert key_id(OLD) in refused(seeded, "export", str(tmp_path / "no.jsonl"), "--decrypt", key=NEW)


def test_a_key_is_checked_and_never_shown(db_url):
    with pytest.raises(ConfigurationError, match=r"secret_key\[1\]='\*\*\*': not a Fernet key") as raised:
        optistate.connect(db_url, secret_key=[NEW, "not-a-key-but-a-secret"])
    assert "not-a-key-but-a-secret" not in str(raised.value)
    with pytest.raises(ConfigurationError, match="given twice"):
        Keyring([NEW, NEW])
    assert key_id(NEW) == hashlib.sha256(base64.urlsafe_b64decode(NEW)).hexdigest()[:8]
    assert Keyring.from_setting(f" {NEW} ,{OLD},").ids == (key_id(NEW), key_id(OLD))
    assert not Keyring.from_setting(None)


def test_a_key_without_the_secrets_extra_is_a_clear_error(db_url, tmp_path):
    script = (
        "import sys; sys.modules['cryptography'] = None\n"  # as if the extra were not installed
        "import optistate\n"
        "from optistate.errors import ConfigurationError\n"
        "optistate.connect(sys.argv[1]).close()\n"  # no key: no cryptography needed
        "try:\n"
        f"    optistate.connect(sys.argv[1], secret_key={NEW!r})\n"
        "except ConfigurationError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, db_url], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path, check=True).stdout
    assert out == "secret_key='***': a secret key needs the cryptography package: pip install 'optistate[secrets]'\n"
