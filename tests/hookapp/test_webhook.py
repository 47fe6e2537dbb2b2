"""The webhook guard's pieces that need no node: the allowlist's form, and
that an allowed network lets exactly its addresses through."""

from __future__ import annotations

import pytest

from aspen.errors import AspenError
from aspen.hookapp.webhook import allowlist, check_target


@pytest.mark.parametrize("bad", ["127.0.0.1", [1], ["not-an-ip"], ["10.0.0.0/33"], {"a": 1}])
def test_a_bad_allowlist_is_refused(bad):
    with pytest.raises(AspenError) as exc:
        allowlist(bad)
    assert exc.value.code == "INVALID_ARGUMENT"


async def test_an_allowed_network_admits_its_addresses_only():
    allowed = allowlist(["127.0.0.0/30", "::1"])
    assert await check_target("http://127.0.0.2:9/x", allowed) == "127.0.0.2"
    assert await check_target("http://[::1]:9/x", allowed) == "::1"
    for url in ("http://127.0.0.9/", "http://10.0.0.1/", "http://[::ffff:10.0.0.1]/"):
        with pytest.raises(AspenError) as exc:
            await check_target(url, allowed)
        assert exc.value.code == "HOOK_WEBHOOK_FORBIDDEN", url
