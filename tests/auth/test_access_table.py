"""The authorisation table covers every request type the node serves: a new
request type without an entry fails here."""

from __future__ import annotations

from aspen.auth.requests import TOKEN_REQUESTS
from aspen.coordination.requests import COORD_REQUESTS
from aspen.hookapp.handler import HOOK_REQUESTS
from aspen.jobs.handler import REQUEST_TYPES as JOB_REQUESTS
from aspen.node.config import load_config
from aspen.node.server import open_node
from aspen.plugins.requests import LIFECYCLE_REQUESTS
from aspen.rpc.access import ACCESS, ROUTES, needs_for
from aspen.rpc.catalog import CORE_REQUESTS
from aspen.rpc.registry import CORE_PRIORITY_END


async def test_every_core_request_type_has_an_entry(tmp_path):
    node = await open_node(load_config(data_dir=str(tmp_path)))
    try:
        served = {
            t
            for h in node.services.registry.snapshot().handlers
            if h.priority < CORE_PRIORITY_END
            for t in h.request_types
        }
    finally:
        await node.close()
    catalogs = {
        *CORE_REQUESTS,
        *LIFECYCLE_REQUESTS,
        *JOB_REQUESTS,
        *TOKEN_REQUESTS,
        *COORD_REQUESTS,
        *HOOK_REQUESTS,
        "ClusterStatus",
    }
    assert served <= catalogs | set(ACCESS), "a core handler serves a type missing from its catalog"
    missing = (served | catalogs) - set(ACCESS)
    assert not missing, f"request types without an authorisation entry: {sorted(missing)}"
    assert set(ROUTES) == {"WatchStream", "BlobUpload", "BlobDownload"}


def test_plugin_types_need_plugin_call_unless_public():
    class Plugin:
        name = "echo"
        public_types = frozenset({"Hello"})

    assert needs_for("Echo", {}, Plugin()) == [("plugin:call", "echo", False)]
    assert needs_for("Hello", {}, Plugin()) == []
    assert needs_for("Unheard", {}, None) == []  # nobody serves it: the answer only says so
