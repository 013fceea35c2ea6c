import re

import pytest
from hypothesis import given, strategies as st

from sandbox.errors import InvalidName
from sandbox.names import git_branch_problem, pg_name, validate_name

CONTRACT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,47}")


@given(st.text(max_size=60))
def test_validate_matches_the_contract_pattern(name: str) -> None:
    if CONTRACT.fullmatch(name) and git_branch_problem(name) is None:
        assert validate_name(name) == name
    else:
        with pytest.raises(InvalidName):
            validate_name(name)


@given(st.from_regex(CONTRACT, fullmatch=True))
def test_valid_names_give_bounded_owned_identifiers(name: str) -> None:
    ident = pg_name("abcd1234", name)
    assert ident.startswith("sbx_abcd1234_")
    assert len(ident.encode()) <= 63


@pytest.mark.parametrize("bad", ["x;rm -rf ~", "../../etc", "", "-a", ".a", "a" * 49, "a b", "a/b", "é", "a\n"])
def test_hostile_names_rejected(bad: str) -> None:
    with pytest.raises(InvalidName) as info:
        validate_name(bad)
    assert info.value.exit_code == 2


def test_long_names_stay_distinct() -> None:
    a, b = "a" * 47 + "1", "a" * 47 + "2"
    assert pg_name("p", a) != pg_name("p", b)
