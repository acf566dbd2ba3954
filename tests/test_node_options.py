"""A misspelt ``@node`` option names itself, the options ``node`` takes and the closest one."""

from __future__ import annotations

import re

import pytest

from flowhooks import node

_VALID = (
    "name, depends_on, retries, retry_delay, backoff, timeout, critical, on_success, on_failure"
)


def test_a_misspelt_option_suggests_the_closest_one() -> None:
    """``retires=2`` names the bad option, every valid one, and suggests ``retries``."""
    expected = (
        f"node() got unknown option(s) ['retires']; it takes {_VALID}; did you mean 'retries'?"
    )
    with pytest.raises(TypeError, match=re.escape(expected)):
        node(retires=2)  # type: ignore[call-overload]


def test_a_misspelt_option_is_caught_when_a_function_is_given_too() -> None:
    """``node(fn, timout=1)`` fails the same way as the decorator form."""

    def load(x: int) -> int:
        return x

    with pytest.raises(TypeError, match=r"\['timout'\].*did you mean 'timeout'\?$"):
        node(load, timout=1)  # type: ignore[call-overload]


def test_several_misspelt_options_each_get_their_suggestion() -> None:
    """Each unknown option with a close match is paired with it; others are only listed."""
    with pytest.raises(TypeError) as caught:
        node(retires=2, timout=1, colour="red")  # type: ignore[call-overload]
    message = str(caught.value)
    assert "unknown option(s) ['colour', 'retires', 'timout']" in message
    assert message.endswith("did you mean 'retries' for 'retires', 'timeout' for 'timout'?")


def test_an_option_with_no_close_match_gets_no_suggestion() -> None:
    """A name unlike any option lists the valid ones without guessing."""
    with pytest.raises(TypeError) as caught:
        node(colour="red")  # type: ignore[call-overload]
    assert str(caught.value) == f"node() got unknown option(s) ['colour']; it takes {_VALID}"
