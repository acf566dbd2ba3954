"""Tests for the redaction policy: keys, text rules, copies, process-wide policy, hostile values."""

from __future__ import annotations

import dataclasses
import re
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import flowhooks
from flowhooks import REDACTED, Redaction, redact_text, redact_value, redaction, reset_redaction
from flowhooks._redact_keys import KeyMatcher
from flowhooks._serialize import TRUNCATION_MARKER, safe_text, to_jsonable

SECRET = "sk-live-123"


@pytest.fixture(autouse=True)
def _default_policy() -> Iterator[None]:
    """Every test starts and ends with the default process-wide policy."""
    reset_redaction()
    yield
    reset_redaction()


@dataclasses.dataclass
class Database:
    host: str
    password: str


@dataclasses.dataclass
class Settings:
    name: str
    db: Database


class Login(BaseModel):
    username: str
    api_key: str


class Client:
    """An object whose repr shows its key, as many client classes do."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key

    def __repr__(self) -> str:
        return f"Client(api_key={self.api_key!r}, region='eu')"


def secret_payload() -> dict[Any, Any]:
    """The secret in every place the policy covers."""
    return {
        "user": "bob",
        "api_key": SECRET,
        "settings": Settings("prod", Database("db.example", SECRET)),
        "login": Login(username="bob", api_key=SECRET),
        "client": Client(SECRET),
        "headers": [("Authorization", f"Bearer {SECRET}"), ("X-Api-Key", SECRET)],
        "header_lists": [["Cookie", f"session={SECRET}"]],
        b"api_key": SECRET,
        "url": f"https://bob:{SECRET}@db.example/x?token={SECRET}",
        "error": ValueError(f"Authorization: Bearer {SECRET}"),
        "note": f"retrying with password={SECRET}",
    }


# -- values -------------------------------------------------------------------------------


def test_the_secret_is_gone_from_every_place_and_the_rest_stays() -> None:
    """One secret in keys, dataclasses, models, reprs, pairs, bytes keys, URLs and messages."""
    out = redact_value(secret_payload())
    assert SECRET not in repr(out)
    assert out["user"] == "bob"
    assert out["api_key"] == REDACTED
    assert out["settings"] == {"name": "prod", "db": {"host": "db.example", "password": "***"}}
    assert out["login"] == {"username": "bob", "api_key": "***"}
    assert out["client"] == "Client(api_key='***', region='eu')"
    assert out["headers"] == [("Authorization", "***"), ("X-Api-Key", "***")]
    assert out["header_lists"] == [["Cookie", "***"]]
    assert out[b"api_key"] == "***"
    assert out["url"] == "https://***@db.example/x?token=***"
    assert out["error"] == "ValueError('Authorization: ***')"
    assert out["note"] == "retrying with password=***"


def test_redaction_returns_a_copy_and_leaves_the_original_alone() -> None:
    """Nothing the run holds is changed: the originals keep the real values."""
    payload = secret_payload()
    redact_value(payload)
    assert payload["api_key"] == SECRET
    assert payload["settings"].db.password == SECRET
    assert payload["login"].api_key == SECRET
    assert payload["client"].api_key == SECRET
    assert payload["headers"][1] == ("X-Api-Key", SECRET)
    assert payload[b"api_key"] == SECRET
    assert SECRET in payload["url"]


def test_json_data_stays_json_data() -> None:
    """Redacting JSON data (a RunResult dict) gives JSON data of the same shape."""
    data = {"run_id": "r", "inputs": {"password": "p", "n": [1, 2.5, None, True]}, "x": "y"}
    assert redact_value(data) == {
        "run_id": "r",
        "inputs": {"password": "***", "n": [1, 2.5, None, True]},
        "x": "y",
    }


def test_kept_values_and_container_types() -> None:
    """Numbers, None and ids are kept; tuples stay tuples, sets and deques become lists."""
    import uuid
    from datetime import UTC, datetime

    when = datetime(2024, 1, 1, tzinfo=UTC)
    ident = uuid.uuid4()
    out = redact_value({"t": (1, "a"), "s": {"x"}, "d": deque([1]), "when": when, "id": ident})
    assert out == {"t": (1, "a"), "s": ["x"], "d": [1], "when": when, "id": ident}


def test_bytes_values_lose_their_credentials() -> None:
    out = redact_value({"raw": f"Authorization: Bearer {SECRET}".encode()})
    assert out == {"raw": b"Authorization: ***"}


def test_max_items_gives_a_bounded_preview() -> None:
    out = Redaction().value(
        {"rows": list(range(10)), **{f"k{i}": i for i in range(5)}}, max_items=3
    )
    assert out == {"rows": [0, 1, 2, "... 7 more items"], "k0": 0, "k1": 1, "...": "3 more keys"}


def test_redact_false_returns_the_value_itself() -> None:
    payload = {"password": SECRET}
    assert redact_value(payload, False) is payload
    assert redact_text(f"password={SECRET}", False) == f"password={SECRET}"


# -- text ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://bob:pw@db.example/x", "https://***@db.example/x"),
        ("postgresql://app:p@ss@db:5432/app", "postgresql://***@db:5432/app"),
        ("https://ghp_abc@github.com/o/r.git", "https://***@github.com/o/r.git"),
        ("https://h/x?access_token=abc&page=2", "https://h/x?access_token=***&page=2"),
        ("https://h/x?page=2#frag", "https://h/x?page=2#frag"),
        ("Authorization: Bearer eyJhbGciOi.x.y", "Authorization: ***"),
        ("sent Bearer abc.def to the API", "sent Bearer *** to the API"),
        ("Basic dXNlcjpwYXNz", "Basic ***"),
        ("Basic setup done", "Basic setup done"),
        ('{"password": "pw", "user": "u"}', '{"password": "***", "user": "u"}'),
        ("{'db_password': 'pw'}", "{'db_password': '***'}"),
        ("Client(api_key=b'pw')", "Client(api_key=b'***')"),
        ("GITHUB_TOKEN=ghp_1 make", "GITHUB_TOKEN=*** make"),
        ("X-Api-Key: k1\nAccept: json", "X-Api-Key: ***\nAccept: json"),
        ("total_tokens=12 tokens=abc", "total_tokens=12 tokens=***"),
        ("tokenizer=bpe author: me", "tokenizer=bpe author: me"),
        ('{"password": "unterminated', '{"password": "***"'),
        ("[('X-Api-Key', 'pw'), ('Accept', 'json')]", "[('X-Api-Key', '***'), ('Accept', 'json')]"),
        ('[["token", 5], ["password", "pw"]]', '[["token", 5], ["password", "***"]]'),
        ("{b'api_key': b'pw'}", "{b'api_key': b'***'}"),
        ("token, then more", "token, then more"),
        ("node 'a' started", "node 'a' started"),
        ("time 12:30, ratio a=b", "time 12:30, ratio a=b"),
        # passwords holding '#' or '/', JSON's escaped slashes; a '@' later on is the host's
        ("postgresql://bob:pw#x@db/app", "postgresql://***@db/app"),
        ("redis://:pw/x@cache", "redis://***@cache"),
        ("https:\\/\\/bob:pw@h", "https:\\/\\/***@h"),
        ("https://u:p@host/x?next=a@b", "https://***@host/x?next=a@b"),
        ("see http://host:8080/path ok", "see http://host:8080/path ok"),
        # command lines, aligned and pretty-printed assignments, bracketed keys, schemes
        ("['psql', '--password=pw1', 'x']", "['psql', '--password=***', 'x']"),
        ("['--password', 'pw1']", "['--password', '***']"),
        ("password    = pw1", "password    = ***"),
        ('{"token":\n  "pw1"}', '{"token":\n  "***"}'),
        ("Enter your password:\nthe next line", "Enter your password:\nthe next line"),
        ('headers["X-Api-Key"] = "pw1"', 'headers["X-Api-Key"] = "***"'),
        ("https://h/x?auth[token]=pw1&y=1", "https://h/x?auth[token]=***&y=1"),
        ("Authorization: SSWS pw1", "Authorization: ***"),
        ("Authorization: Negotiate pw1", "Authorization: ***"),
        # long credentials; ports and '@' in paths are not user information
        ("https://bob:" + "Q" * 300 + "@git.example.com/x", "https://***@git.example.com/x"),
        ("https://" + "T" * 300 + "@host/x", "https://***@host/x"),
        ("https://user:pa/ss#w@rd@host", "https://***@host"),
        (
            "GET https://registry.npmjs.org:443/@types/node",
            "GET https://registry.npmjs.org:443/@types/node",
        ),
        (
            "http://localhost:8080/users/alice@example.com",
            "http://localhost:8080/users/alice@example.com",
        ),
        (
            "jdbc:mysql://localhost:3306/db?user=root@localhost",
            "jdbc:mysql://localhost:3306/db?user=root@localhost",
        ),
        (
            '{\n  "columns": [\n    "password_hash",\n    "email"\n  ]\n}',
            '{\n  "columns": [\n    "password_hash",\n    "email"\n  ]\n}',
        ),
    ],
)
def test_text_rules(text: str, expected: str) -> None:
    """URL credentials, Bearer/Basic credentials and secret assignments are cut; the rest stays."""
    assert redact_text(text) == expected


@pytest.mark.timeout(60)  # a blow-up (quadratic or worse on 200,000 characters) takes hours
def test_text_redaction_is_linear_on_long_adversarial_input() -> None:
    """Long runs of what the expressions look for finish quickly (no backtracking blow-up)."""
    plain = ["a" * 200_000, "://" * 50_000, "https://" + "x" * 200_000, "a-b." * 50_000 + "="]
    for text in plain:  # nothing to cut: the text comes back whole
        assert redact_text(text) == text
    assert redact_text("password=" * 20_000) == "password=***"
    assert redact_text('"token": "' + "\\" * 100_000) == '"token": "***"'
    assert redact_text("Bearer " * 30_000).startswith("Bearer *** Bearer ***")


# -- keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "passwd",
        "secret",
        "token",
        "api_key",
        "apikey",
        "authorization",
        "auth",
        "cookie",
        "credential",
        "private_key",
        "db_password",
        "GITHUB_TOKEN",
        "x-api-key",
        "X_API_KEY",
        "Private-Key",
    ],
)
def test_secret_key_names(key: str) -> None:
    """The names SPEC lists, inside longer names, in any case, with - or _."""
    assert redact_value({key: "v"}) == {key: REDACTED}
    assert redact_value({key.encode(): "v"}) == {key.encode(): REDACTED}


def test_verdicts_are_cached_per_key() -> None:
    """Each key's verdict is computed once; other values under the same key reuse it."""
    matcher = KeyMatcher(flowhooks.Redaction().keys)
    rows = [{"tokenizer": "bpe", "api_keys": ["k"], "total_tokens": n} for n in range(100)]
    for row in rows:
        for key, value in row.items():
            matcher.hides(key, value)
    assert set(matcher._cache) == {"tokenizer", "api_keys", "total_tokens"}


# -- policies -----------------------------------------------------------------------------


def test_process_wide_additions_accumulate_and_reset() -> None:
    """redaction() adds keys and patterns (never replaces); reset_redaction() restores."""
    redaction(keys=["ssn"])
    policy = redaction(patterns=[r"acct-\d+"])
    assert "ssn" in policy.keys
    assert "password" in policy.keys
    assert redaction() is policy
    text = "ssn=123-45 paid from acct-9981, password=pw"
    assert redact_text(text) == "ssn=*** paid from ***, password=***"
    assert redact_value({"ssns": ["1"]}) == {"ssns": "***"}
    reset_redaction()
    assert redact_text(text) == "ssn=123-45 paid from acct-9981, password=***"


def test_per_call_options() -> None:
    """Key names add to the process-wide policy; a Redaction is used exactly as it is."""
    redaction(patterns=[r"acct-\d+"])
    text = "iban=DE89 acct-1 password=pw"
    assert redact_text(text, ["iban"]) == "iban=*** *** password=***"
    only = Redaction(keys=["iban"], patterns=[re.compile(r"(?<=acct-)\d+")])
    assert redact_text(text, only) == "iban=*** acct-*** password=pw"
    assert only.extend(keys=["password"]).text(text) == "iban=*** acct-*** password=***"
    assert only.with_keys(["password"]).text(text) == "iban=DE89 acct-*** password=***"
    assert only.extend(keys=["x"]) is only.extend(keys=["x"])  # remembered


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda: Redaction(keys="password"), TypeError, "keys"),
        (lambda: Redaction(keys=[1]), TypeError, "keys"),  # type: ignore[list-item]
        (lambda: Redaction(patterns=["("]), ValueError, "patterns"),
        (lambda: Redaction(patterns=[b"x"]), TypeError, "patterns"),  # type: ignore[list-item]
        (lambda: redaction(keys=[""]), TypeError, "keys"),
        (lambda: Redaction.coerce("yes"), TypeError, "redact"),
        (lambda: Redaction.coerce(1, name="redact"), TypeError, "redact"),
        (lambda: redact_value({}, None), TypeError, "redact"),  # type: ignore[arg-type]
    ],
)
def test_bad_input_names_the_parameter(call: Any, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        call()


# -- hostile values -----------------------------------------------------------------------


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError(SECRET)


class BadIter(list[Any]):
    def __iter__(self) -> Iterator[Any]:
        raise RuntimeError(SECRET)


class BadItems(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        yield "password"
        raise RuntimeError(SECRET)

    def __len__(self) -> int:
        raise RuntimeError("no len")


class BadClass:
    @property  # type: ignore[misc]
    def __class__(self) -> type:
        raise RuntimeError(SECRET)


class BadModel(BaseModel):
    api_key: str

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        raise RuntimeError("no dump")


@dataclasses.dataclass
class BadField:
    password: str

    @property
    def broken(self) -> str:
        raise RuntimeError("x")


class Endless(Mapping[str, int]):
    """A mapping that never stops yielding keys."""

    def __getitem__(self, key: str) -> int:
        return 1

    def __iter__(self) -> Iterator[str]:
        n = 0
        while True:
            n += 1
            yield f"k{n}"

    def __len__(self) -> int:
        return 10**12


def test_hostile_values_become_placeholders() -> None:
    """Broken reprs, iterators, mappings, __class__ and serialisers never make it raise."""
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    out = redact_value(
        {
            "repr": BadRepr(),
            "iter": BadIter([1]),
            "items": BadItems(),
            "cls": BadClass(),
            "model": BadModel(api_key=SECRET),
            "cyclic": cyclic,
        }
    )
    assert SECRET not in repr(out)
    assert out["repr"] == "<unrepresentable BadRepr: RuntimeError>"
    assert out["iter"].startswith("<unrepresentable")
    assert out["items"].startswith("<unrepresentable")
    assert out["model"] == "BadModel(api_key='***')"
    assert out["cyclic"] == [1, "<circular reference>"]


@pytest.mark.timeout(60)  # the hang guard: a wall-clock bound here only measured the machine
def test_huge_and_deep_structures_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """An endless mapping, a shared-node blow-up and deep nesting all end within the budget."""
    import flowhooks._redact as module

    monkeypatch.setattr(module, "_BUDGET", 20_000)
    shared: list[Any] = ["leaf"]
    for _ in range(60):
        shared = [shared, shared]  # 2**60 paths through one object per level
    deep: list[Any] = []
    for _ in range(10_000):
        deep = [deep]
    out = redact_value({"endless": Endless(), "shared": shared, "deep": deep})
    assert "<redaction limit reached>" in repr(out) or "<nested too deeply>" in repr(out)
    assert "<nested too deeply>" in repr(redact_value(deep))


_SECRET_KEYS = st.sampled_from(
    ["password", "db_password", "GITHUB_TOKEN", "x-api-key", "Authorization", "apiKey"]
)
_NOISE = st.text(max_size=12).filter(lambda t: "sk-live" not in t)


def _secret_leaves() -> st.SearchStrategy[Any]:
    """The secret, each time in a place redaction covers."""
    return st.one_of(
        _SECRET_KEYS.map(lambda k: {k: SECRET}),
        _SECRET_KEYS.map(lambda k: {k.encode(): SECRET}),
        _SECRET_KEYS.map(lambda k: (k, SECRET)),
        _SECRET_KEYS.map(lambda k: [k, SECRET]),
        _SECRET_KEYS.map(lambda k: f"{k}={SECRET}"),
        _SECRET_KEYS.map(lambda k: f'{{"{k}": "{SECRET}"}}'),
        st.just(f"https://bob:{SECRET}@db.example/x?token={SECRET}"),
        st.just(f"Authorization: Bearer {SECRET}"),
        st.just(f"Bearer {SECRET}".encode()),
        st.just(Database("h", SECRET)),
        st.just(Login(username="u", api_key=SECRET)),
        st.just(Client(SECRET)),
        st.just(ValueError(f"Authorization: Bearer {SECRET}")),
        st.builds(BadRepr),
        st.builds(BadIter, st.just([SECRET])),
        st.builds(BadItems),
        st.builds(BadClass),
        st.builds(Endless),
    )


def _cyclic(items: list[Any]) -> list[Any]:
    items.append(items)
    return items


_VALUES = st.recursive(
    st.one_of(
        st.none(), st.integers(), st.floats(), _NOISE, st.binary(max_size=8), _secret_leaves()
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=3).map(tuple),
        st.lists(inner, max_size=3).map(_cyclic),
        st.dictionaries(_NOISE, inner, max_size=4),
        st.sets(_NOISE, max_size=3),
        st.builds(Settings, _NOISE, st.just(Database("h", SECRET))),
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_VALUES)
def test_hostile_nested_values_never_raise_nor_leak(value: Any) -> None:
    """Whatever the nesting, redaction returns, and the secret is nowhere in what it returns."""
    import flowhooks._redact as module

    saved = module._BUDGET
    module._BUDGET = 5_000  # type: ignore[misc]  # Endless mappings end quickly
    try:
        out = redact_value(value)
    finally:
        module._BUDGET = saved  # type: ignore[misc]
    assert SECRET not in repr(out)


def test_a_named_tuple_keeps_its_field_names_and_its_secrets_are_hidden() -> None:
    from typing import NamedTuple

    class Creds(NamedTuple):
        user: str
        password: str

    assert redact_value({"db": Creds("app", "hunter2")}) == {
        "db": {"user": "app", "password": "***"}
    }


def test_a_secret_found_under_its_key_is_hidden_wherever_else_it_appears() -> None:
    """A value that lost its key on the way (a list of reprs, a message) goes too."""
    redacted = redact_value(
        {
            "api_key": "'sk-live-123'",
            "positional": ["'bob'", "'sk-live-123'"],
            "message": "called with sk-live-123 twice",
            "short": {"token": "abc", "other": "abc"},
            "raw": b"POST /login pw=sk-live-123",
            "seen": {"sk-live-123": 3},
        }
    )
    assert redacted == {
        "api_key": "***",
        "positional": ["'bob'", "'***'"],
        "message": "called with *** twice",
        "short": {"token": "***", "other": "abc"},  # too short to hunt for elsewhere
        "raw": b"POST /login pw=***",
        "seen": {"***": 3},
    }


def test_a_pair_with_named_fields_hides_its_value_when_its_key_is_secret() -> None:
    """A header as HAR writes it, or a two-field named tuple used as a pair."""
    from typing import NamedTuple

    from flowhooks import to_jsonable

    class Setting(NamedTuple):
        key: str
        val: str

    data = {
        "headers": [{"name": "Authorization", "value": "Bearer abc.def.ghi"}],
        "settings": [Setting("password", "hunter2hunter2"), Setting("region", "eu")],
    }
    expected = {
        "headers": [{"name": "Authorization", "value": "***"}],
        "settings": [{"key": "password", "val": "***"}, {"key": "region", "val": "eu"}],
    }
    assert redact_value(data) == expected
    assert redact_value(to_jsonable(data)) == expected  # as the history and webhooks do


def test_the_hunt_for_a_hidden_secret_covers_keys_of_every_kind_and_utf8_bytes() -> None:
    secret = "p\u00e4ssw\u00f6rt-geheim-42"
    redacted = redact_value(
        {
            "password": secret,
            "body": f"pw={secret}".encode(),
            "by_bytes": {secret.encode(): 1},
            "by_tuple": {("k", secret): 1},
        }
    )
    assert redacted == {
        "password": "***",
        "body": b"pw=***",
        "by_bytes": {b"***": 1},
        "by_tuple": {("k", "***"): 1},
    }


def test_a_url_cut_before_its_at_loses_what_follows_its_scheme() -> None:
    """Text cut to the cap right inside a URL's password: the '@' that ends it is gone."""
    cut = safe_text("x" * 40 + " postgresql://bob:pw-secret@db/app failed", max_chars=62)
    assert "bob:pw-s... [" in cut  # the cut falls inside the password
    assert "pw-s" not in redact_text(cut)
    assert redact_text(cut).startswith("x" * 40 + " postgresql://***...")


def test_texts_of_pathological_shapes_are_scanned_in_linear_time() -> None:
    """Many '://' with nothing between: each URL rule looks a bounded way ahead."""
    for text in ("://" * 30_000, "://a:" * 20_000, "://a@" * 20_000):
        assert redact_text(text)  # returns (a quadratic scan would take minutes)


# -- payloads cut to the size cap -------------------------------------------------------


def _cut(value: object, cap: int = 2_000) -> dict[str, object]:
    data = to_jsonable(value, max_chars=cap)
    assert isinstance(data, dict)
    assert data.get(TRUNCATION_MARKER) is True
    return data


def test_a_cut_payload_keeps_no_secret_value_of_any_shape() -> None:
    """The preview of a payload over the cap is read as JSON: a secret key's list, object
    or number value is hidden, and so is its text elsewhere in the preview."""
    payload = {
        "auth": ["bob", "pw-in-a-list"],
        "credentials": {"user": "bob", "pass": "pw-in-an-object"},
        "api_key": 123456789,
        "token": "pw-a-string",
        "note": "copied pw-a-string here",
        "total_tokens": 5,
        "items": [{"id": i} for i in range(1_000)],
    }
    out = redact_value(_cut(payload))
    preview = out["preview"]
    for secret in ("pw-in-a-list", "pw-in-an-object", "123456789", "pw-a-string"):
        assert secret not in preview
    assert preview.startswith(
        '{"auth": "***", "credentials": "***", "api_key": "***", "token": "***", '
        '"note": "copied *** here", "total_tokens": 5, "items": [{"id": 0}'
    )
    assert out["original_chars"] == _cut(payload)["original_chars"]


@pytest.mark.parametrize(
    "cap",
    [20, 26, 30, 35],
)
def test_a_value_cut_anywhere_is_hidden_up_to_the_cut(cap: int) -> None:
    """Cut inside the key, between key and value, inside a list or a string of it."""
    out = redact_value(_cut({"x": 1, "token": ["abcdefgh", "ijklmnop"]}, cap))
    assert "ijklmnop" not in out["preview"]
    assert "abcd" not in out["preview"]


def test_a_cut_payload_nested_in_a_result_is_read_as_json_too() -> None:
    """Markers deeper inside (a run result's capped output) get the same reading."""
    inner = _cut({"password": ["p", "pw-nested-deep"], "rows": list(range(2_000))})
    out = redact_value({"outputs": {"load": inner}})
    assert "pw-nested-deep" not in out["outputs"]["load"]["preview"]


def test_a_dict_that_only_looks_like_a_marker_is_walked_as_it_is() -> None:
    """Only the real marker (``True``, a dict) has its preview read as JSON."""
    odd = {TRUNCATION_MARKER: "yes", "preview": '{"token": ["a"]}'}
    assert redact_value(odd) == odd


def test_a_cut_ordinary_url_keeps_its_host_and_path() -> None:
    """Only a cut URL that may hold a password (a ':' before its first '/') loses its rest."""
    cut = safe_text("x" * 40 + " https://example.com/api/v1/items/12345 more", max_chars=70)
    assert "https://example.com/api/v1/it" in redact_text(cut)


@pytest.mark.parametrize(
    ("value", "cap", "secret"),
    [
        # a JSON document inside a string, and a cut payload inside a cut payload
        ({"log": '{"password": "Hunter2Secret"} ' + "z" * 300}, 200, "Hunter2Secret"),
        (
            {
                "outer": to_jsonable(
                    {"auth": ["u", "hunter2pw"], "r": list(range(300))}, max_chars=100
                ),
                "p": "y" * 400,
            },
            300,
            "hunter2pw",
        ),
        # a URL's password the cut parted from its '@'
        ({"pad": "x" * 150, "dsn": "postgresql://app:Hunter2Secret99@db/app"}, 200, "Hunter2"),
        # a secret holding a quote and a backslash, and its copy elsewhere
        (
            {"api_key": 'pw"quoted\\sec', "note": 'copy pw"quoted\\sec', "pad": "x" * 300},
            200,
            "quoted",
        ),
        # a key written with an escape
        ({"pass\u0077ord": "unicodeesc1", "pad": "x" * 300}, 120, "unicodeesc1"),
    ],
)
def test_every_string_of_a_preview_is_read_as_its_text(
    value: object, cap: int, secret: str
) -> None:
    out = redact_value(_cut(value, cap))
    assert secret not in out["preview"]


def test_a_secret_objects_own_values_are_not_hidden_elsewhere() -> None:
    """As in an uncut payload, only a secret key's string is hidden elsewhere, not the
    names and values of an object or list under it (they are hidden in place)."""
    value = {
        "credentials": {"region": "eu-west-1", "password": "pw-secret-1"},
        "users": [{"region": "eu-west-1"}],
        "pad": "x" * 300,
    }
    preview = redact_value(_cut(value, 200))["preview"]
    assert '"users": [{"region": "eu-west-1"}]' in preview
    assert "pw-secret-1" not in preview


def test_a_deeply_nested_cut_payload_is_redacted_not_replaced() -> None:
    """Nesting hundreds of levels deep: the preview comes back redacted, not a placeholder."""
    nested: object = "x" * 70_000
    for _ in range(600):
        nested = {"k": nested}
    out = redact_value(_cut(nested, 64_000))
    assert out["preview"].startswith('{"k": {"k": ')


@pytest.mark.parametrize("cut", ['"ab\\u00', '"ab\\u0', '"ab\\u', '"ab\\', '"ab\\u000'])
def test_a_string_cut_inside_an_escape_is_read_up_to_the_escape(cut: str) -> None:
    from flowhooks._redact_json import _cut_string

    assert _cut_string(cut) == "ab"
