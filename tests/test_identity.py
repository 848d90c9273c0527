"""Identity tokens: signature, expiry, audience, issuer, pinned algorithms and claims, and the settings that check them."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from bot.identity import IdentityError, IdentitySettings, User, verify_token

log = logging.getLogger(__name__)

SECRET = "k" * 24 + "-shared-with-the-host-site"
OTHER_SECRET = "an-attackers-guess-that-is-long-enough-to-sign"
HS = IdentitySettings(secret=SECRET)


@pytest.fixture(scope="module")
def rsa_pair() -> tuple[Any, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return key, pem


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"sub": "user-42", "name": "Ada Lovelace", "email": "ada@example.com",
                            "aud": "hybridbot", "iat": now, "exp": now + 300}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def hs(payload: dict[str, Any], secret: str = SECRET, alg: str = "HS256") -> str:
    return jwt.encode(payload, secret, algorithm=alg)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: dict[str, Any], payload: dict[str, Any], key: bytes | None) -> str:
    """A JWT built by hand, as an attacker would: HMAC-SHA256 with ``key``, or no signature."""
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())
    signature = b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest()) if key else ""
    return signing_input + "." + signature


def code_of(token: str, settings: IdentitySettings = HS) -> str:
    with pytest.raises(IdentityError) as info:
        verify_token(token, settings)
    return info.value.code


def test_a_valid_hs256_token_names_the_user() -> None:
    user = verify_token(hs(claims()), HS)
    assert user == User(id="user-42", name="Ada Lovelace", email="ada@example.com")
    assert user.as_context() == {"id": "user-42", "name": "Ada Lovelace", "email": "ada@example.com"}


def test_name_and_email_are_optional() -> None:
    assert verify_token(hs(claims(name=None, email=None)), HS) == User(id="user-42")


def test_a_valid_rs256_token_is_checked_with_the_public_key_file(rsa_pair: tuple[Any, str], tmp_path: Path) -> None:
    key, pem = rsa_pair
    (tmp_path / "host.pem").write_text(pem, encoding="ascii")
    settings = IdentitySettings.from_env({"BOT_IDENTITY_PUBLIC_KEY": str(tmp_path / "host.pem")})
    token = jwt.encode(claims(sub="u-rs"), key, algorithm="RS256")
    assert verify_token(token, settings).id == "u-rs"


def test_a_token_signed_by_another_rsa_key_has_a_bad_signature(rsa_pair: tuple[Any, str]) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(claims(), other, algorithm="RS256")
    assert code_of(token, IdentitySettings(public_key=rsa_pair[1])) == "bad_signature"


def test_an_expired_token_is_refused() -> None:
    past = int(time.time()) - 3600
    assert code_of(hs(claims(iat=past - 300, exp=past))) == "expired"


def test_leeway_tolerates_a_little_clock_skew_and_no_more() -> None:
    now = int(time.time())
    just_expired = hs(claims(exp=now - 10))
    assert verify_token(just_expired, HS).id == "user-42"
    assert code_of(just_expired, IdentitySettings(secret=SECRET, leeway=0)) == "expired"
    assert code_of(hs(claims(exp=now - 60))) == "expired"


def test_a_token_from_the_future_is_not_valid_yet() -> None:
    later = int(time.time()) + 600
    assert code_of(hs(claims(nbf=later, exp=later + 300))) == "not_yet_valid"
    assert code_of(hs(claims(iat=later, exp=later + 300))) == "not_yet_valid"
    assert verify_token(hs(claims(nbf=int(time.time()) + 10)), HS).id == "user-42"  # inside the leeway


def test_a_token_signed_with_another_secret_has_a_bad_signature() -> None:
    assert code_of(hs(claims(), secret=OTHER_SECRET)) == "bad_signature"


def test_a_tampered_payload_breaks_the_signature() -> None:
    header, _, signature = hs(claims()).split(".")
    forged = b64(json.dumps(claims(sub="admin")).encode())
    assert code_of(f"{header}.{forged}.{signature}") == "bad_signature"


def test_the_audience_must_match() -> None:
    assert code_of(hs(claims(aud="another-app"))) == "wrong_audience"
    assert code_of(hs(claims(aud=None))) == "missing_claim"
    custom = IdentitySettings(secret=SECRET, audience="shop-bot")
    assert verify_token(hs(claims(aud="shop-bot")), custom).id == "user-42"
    assert code_of(hs(claims()), custom) == "wrong_audience"


def test_the_issuer_is_checked_when_configured() -> None:
    settings = IdentitySettings(secret=SECRET, issuer="https://shop.example")
    assert verify_token(hs(claims(iss="https://shop.example")), settings).id == "user-42"
    assert code_of(hs(claims(iss="https://evil.example")), settings) == "wrong_issuer"
    assert code_of(hs(claims()), settings) == "missing_claim"


@pytest.mark.parametrize("missing", ["sub", "exp"])
def test_sub_and_exp_are_required(missing: str) -> None:
    assert code_of(hs(claims(**{missing: None}))) == "missing_claim"


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_unsigned_tokens_are_refused_whatever_the_spelling(alg: str) -> None:
    token = raw_token({"alg": alg, "typ": "JWT"}, claims(), None)
    assert code_of(token) == "algorithm"


def test_an_hs256_token_keyed_with_the_public_key_is_refused_by_an_rs256_server(rsa_pair: tuple[Any, str]) -> None:
    """The classic algorithm confusion: the attacker knows the public PEM and uses it as an HMAC secret."""
    pem = rsa_pair[1]
    forged = raw_token({"alg": "HS256", "typ": "JWT"}, claims(sub="admin"), pem.encode())
    assert code_of(forged, IdentitySettings(public_key=pem)) == "algorithm"
    both = IdentitySettings(secret=SECRET, public_key=pem)
    assert code_of(forged, both) == "bad_signature"  # HS256 is only ever checked with the shared secret


def test_an_rs256_token_is_refused_by_an_hs256_only_server(rsa_pair: tuple[Any, str]) -> None:
    assert code_of(jwt.encode(claims(), rsa_pair[0], algorithm="RS256")) == "algorithm"


def test_other_hmac_algorithms_are_not_accepted_even_with_the_right_secret() -> None:
    secret = SECRET * 2  # long enough for HS512
    assert code_of(hs(claims(), secret=secret, alg="HS512"), IdentitySettings(secret=secret)) == "algorithm"


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c", "!!.??.##", "x" * 9000, "Bearer abc.def.ghi"])
def test_garbage_is_malformed(token: str) -> None:
    assert code_of(token) == "malformed"


@pytest.mark.parametrize("changes", [{"sub": 42}, {"sub": ""}, {"sub": "   "}, {"sub": "x" * 300},
                                     {"sub": "a\nb"}, {"name": ["Ada"]}, {"email": 7}])
def test_claims_of_the_wrong_shape_are_malformed(changes: dict[str, Any]) -> None:
    assert code_of(hs(claims(**changes))) == "malformed"


def test_the_error_never_repeats_the_token() -> None:
    token = hs(claims(exp=int(time.time()) - 3600))
    with pytest.raises(IdentityError) as info:
        verify_token(token, HS)
    assert token not in str(info.value) and token.split(".")[1] not in info.value.detail


# -- settings ------------------------------------------------------------------------------------------
def test_settings_from_the_environment(tmp_path: Path) -> None:
    settings = IdentitySettings.from_env({"BOT_IDENTITY_SECRET": SECRET, "BOT_IDENTITY_AUDIENCE": "shop",
                                          "BOT_IDENTITY_ISSUER": "https://shop.example",
                                          "BOT_IDENTITY_LEEWAY": "5", "BOT_REQUIRE_IDENTITY": "1"})
    assert (settings.audience, settings.issuer, settings.leeway, settings.required) == (
        "shop", "https://shop.example", 5.0, True)
    assert settings.enabled and list(settings.keys()) == ["HS256"]
    assert SECRET not in repr(settings)
    assert not IdentitySettings.from_env({}).enabled


@pytest.mark.parametrize("env, fragment", [
    ({"BOT_IDENTITY_SECRET": "short"}, "at least 32 bytes"),
    ({"BOT_REQUIRE_IDENTITY": "1"}, "no key is configured"),
    ({"BOT_REQUIRE_IDENTITY": "maybe"}, "BOT_REQUIRE_IDENTITY must be 1 or 0"),
    ({"BOT_IDENTITY_SECRET": SECRET, "BOT_IDENTITY_LEEWAY": "soon"}, "BOT_IDENTITY_LEEWAY"),
    ({"BOT_IDENTITY_SECRET": SECRET, "BOT_IDENTITY_LEEWAY": "-1"}, "BOT_IDENTITY_LEEWAY"),
    ({"BOT_IDENTITY_PUBLIC_KEY": "/nonexistent/host.pem"}, "cannot read the PEM file"),
])
def test_unusable_settings_fail_at_start_with_the_fix(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        IdentitySettings.from_env(env)


def test_a_public_key_file_must_hold_an_rsa_public_key(tmp_path: Path) -> None:
    ec_pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    (tmp_path / "ec.pem").write_text(ec_pem, encoding="ascii")
    with pytest.raises(ValueError, match="must be an RSA public key"):
        IdentitySettings.from_env({"BOT_IDENTITY_PUBLIC_KEY": str(tmp_path / "ec.pem")})
    (tmp_path / "junk.pem").write_text("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n",
                                       encoding="ascii")
    with pytest.raises(ValueError, match="not a readable PEM public key"):
        IdentitySettings.from_env({"BOT_IDENTITY_PUBLIC_KEY": str(tmp_path / "junk.pem")})
    (tmp_path / "private.pem").write_text("-----BEGIN PRIVATE KEY-----\n", encoding="ascii")
    with pytest.raises(ValueError, match="PEM file holding the host site's RSA public key"):
        IdentitySettings.from_env({"BOT_IDENTITY_PUBLIC_KEY": str(tmp_path / "private.pem")})
