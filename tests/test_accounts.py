import pytest

from ibkr_tasks.accounts import is_paper_account, validate_account_id
from ibkr_tasks.errors import ConfigurationError


@pytest.mark.parametrize(
    "acct", ["DU5822420", "DUO873728", "DUP656969", "DUH724521", "du1234567", "DF1234567"]
)
def test_paper_ids_including_letter_forms(acct: str) -> None:
    assert is_paper_account(acct)


@pytest.mark.parametrize("acct", ["U1234567", "F1234567", "U12345678"])
def test_live_ids(acct: str) -> None:
    assert not is_paper_account(acct)


def test_validate_account_id_normalises_and_refuses_garbage() -> None:
    assert validate_account_id(" duo873728 ") == "DUO873728"
    with pytest.raises(ConfigurationError, match="not an IBKR account id"):
        validate_account_id("not-an-account")
