"""Live tokens name one user for a while: signed with the first LIVE_TOKEN_SECRET,
accepted from any listed (rotation), refused once expired, tampered with or foreign."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.errors import ConfigError, TokenRejected
from pipeline.live.tokens import MAX_TTL, mint, read

NOW = 1_800_000_000.0


def test_a_token_names_its_user_until_it_expires() -> None:
    token = mint("ada@clippable.test", ("s1",), ttl=60, now=NOW)

    assert read(token, ("s1",), now=NOW + 59) == ("ada@clippable.test", NOW + 60)
    with pytest.raises(TokenRejected, match="expired"):
        read(token, ("s1",), now=NOW + 60)


def test_rotation_signs_with_the_first_secret_and_accepts_the_others() -> None:
    old = mint("ada@clippable.test", ("old",), now=NOW)
    new = mint("ada@clippable.test", ("new", "old"), now=NOW)

    assert read(old, ("new", "old"), now=NOW)[0] == "ada@clippable.test"
    assert read(new, ("new",), now=NOW)[0] == "ada@clippable.test"
    with pytest.raises(TokenRejected):
        read(old, ("new",), now=NOW)  # the old secret retired: its tokens die with it


@pytest.mark.parametrize(
    "token",
    ["", "garbage", "a.b", "eyJzdWIiOiJhZGEifQ.forged", "\x00\xff", "é" * 300],
)
def test_anything_but_our_token_is_refused(token: str) -> None:
    with pytest.raises(TokenRejected):
        read(token, ("s1",), now=NOW)


def test_a_tampered_token_is_refused() -> None:
    token = mint("ada@clippable.test", ("s1",), now=NOW)
    signature = token.rsplit(".", 1)[1]
    forged = mint("eve@clippable.test", ("other",), now=NOW).rsplit(".", 1)[0]

    with pytest.raises(TokenRejected):
        read(f"{forged}.{signature}", ("s1",), now=NOW)


def test_no_secret_means_no_tokens() -> None:
    with pytest.raises(ConfigError, match="LIVE_TOKEN_SECRET"):
        mint("ada@clippable.test", ())


@pytest.mark.parametrize("ttl", [0, -1, MAX_TTL + 1])
def test_a_lifetime_out_of_bounds_is_refused(ttl: float) -> None:
    with pytest.raises(ValueError, match="ttl"):
        mint("ada@clippable.test", ("s1",), ttl=ttl)


def test_pipeline_token_prints_a_token_for_the_user() -> None:
    runner = CliRunner()
    done = runner.invoke(
        main,
        ["token", "--user", "ada@clippable.test", "--ttl", "90"],
        env={"LIVE_TOKEN_SECRET": "cli-secret"},
    )

    assert done.exit_code == 0, done.output
    email, _ = read(done.output.strip(), ("cli-secret",))
    assert email == "ada@clippable.test"


def test_pipeline_token_without_a_secret_says_which_variable_is_missing() -> None:
    done = CliRunner().invoke(main, ["token", "--user", "a@b.c"], env={"LIVE_TOKEN_SECRET": ""})

    assert done.exit_code == 2
    assert "LIVE_TOKEN_SECRET is not set" in done.output
