"""The shipped prompt policy: known ids, fail-closed defaults, overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from ibkr_tasks.client.prompts import PromptPolicy
from ibkr_tasks.errors import ConfigurationError


def test_shipped_policy_allows_informational_prompts_only() -> None:
    policy = PromptPolicy.default()
    assert policy.allows(["o163"]) and policy.allows(["o354"]) and policy.allows(["o163", "o354"])
    for refused in (["p6"], ["p12"], ["o383"], ["o451"], ["o99999"], [], ["o163", "o99999"]):
        assert not policy.allows(refused), refused


def test_describe_says_unknown_versus_not_allowed() -> None:
    policy = PromptPolicy.default()
    text = policy.describe(["o99999", "p6"])
    assert "o99999 (unknown to the prompt policy)" in text
    assert "p6 (not allowed" in text


def test_with_allowed_opts_in_without_touching_the_original() -> None:
    base = PromptPolicy.default()
    wider = base.with_allowed("o383")
    assert wider.allows(["o383", "o163"]) and not base.allows(["o383"])


def test_policy_file_can_be_loaded_and_bad_files_are_configuration_errors(tmp_path: Path) -> None:
    good = tmp_path / "policy.json"
    good.write_text('{"prompts": {"o1": {"allow": true}, "o2": {"allow": "yes"}}}')
    policy = PromptPolicy.load(good)
    assert policy.allows(["o1"]) and not policy.allows(["o2"])  # only a JSON true allows
    bad = tmp_path / "bad.json"
    bad.write_text('{"prompt": {}}')
    with pytest.raises(ConfigurationError, match="prompt policy"):
        PromptPolicy.load(bad)


def test_every_prompt_the_simulator_asks_is_known_to_the_shipped_policy() -> None:
    from ibkr_tasks.sim.app import PROMPTS

    policy = PromptPolicy.default()
    assert set(PROMPTS) <= policy.known
    assert policy.allows(["o354", "o10151", "o163", "o403"])  # what ordinary orders are asked


def test_rebalance_docs_list_every_prompt_id_the_shipped_policy_knows() -> None:
    """docs/rebalance.md tells how to allow a prompt; its table of ids must say what the policy says."""
    import re

    docs = (Path(__file__).resolve().parents[1] / "docs" / "rebalance.md").read_text("utf-8")
    documented = {
        m["id"]: m["allow"] == "yes"
        for m in re.finditer(r"^\| `(?P<id>[a-z]\d+)` \| (?P<allow>yes|no) \|", docs, re.MULTILINE)
    }
    policy = PromptPolicy.default()
    assert documented == {mid: mid in policy.allowed for mid in policy.known}
    assert "allow_prompts='[\"o451\"]'" in docs  # the per-run way, as a CLI parameter
