"""etcd member list, per-member health and the leader, for ``aspen cluster
status``: the member list comes from the cluster API through any live
member, then every member's own Status is asked with a short timeout, so a
dead member shows as unhealthy instead of stalling the report."""

from __future__ import annotations

import asyncio

import grpc
import msgspec
from aetcd import rpc

from aspen.storage.etcd_endpoints import EndpointPool, map_rpc_error
from aspen.storage.etcd_security import EtcdSecurity

STATUS_TIMEOUT = 1.5


class EtcdMemberStatus(msgspec.Struct, frozen=True):
    id: str  # hex, as etcdctl prints it
    name: str
    client_urls: list[str]
    peer_urls: list[str]
    healthy: bool
    is_leader: bool = False
    version: str = ""
    db_size: int = 0
    raft_term: int = 0
    raft_index: int = 0
    error: str = ""


class EtcdClusterStatus(msgspec.Struct, frozen=True):
    members: list[EtcdMemberStatus]
    leader: str | None  # member name


async def _member_status(member, timeout: float, security: EtcdSecurity | None) -> EtcdMemberStatus:
    base = {
        "id": f"{member.ID:x}",
        "name": member.name,
        "client_urls": list(member.clientURLs),
        "peer_urls": list(member.peerURLs),
    }
    if not member.clientURLs:
        return EtcdMemberStatus(**base, healthy=False, error="not started (no client URL yet)")
    pool = EndpointPool(list(member.clientURLs)[:1], request_timeout=timeout, security=security)
    try:
        st = await pool.stubs(0).maintenance.Status(rpc.StatusRequest(), timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        return EtcdMemberStatus(**base, healthy=False, error=map_rpc_error(exc).message)
    finally:
        await pool.close()
    return EtcdMemberStatus(
        **base,
        healthy=st.leader != 0 and not st.errors,
        is_leader=st.leader == member.ID,
        version=st.version,
        db_size=st.dbSize,
        raft_term=st.raftTerm,
        raft_index=st.raftIndex,
        error="; ".join(st.errors) if st.errors else ("" if st.leader else "no leader"),
    )


async def etcd_cluster_status(pool: EndpointPool, timeout: float = STATUS_TIMEOUT) -> EtcdClusterStatus:
    """Members through ``pool`` (with its failover), then each member's status."""
    resp = await pool.call(lambda s, t: s.cluster.MemberList(rpc.MemberListRequest(), timeout=t), idempotent=True)
    members = await asyncio.gather(*(_member_status(m, timeout, pool.security) for m in resp.members))
    members = sorted(members, key=lambda m: m.name)
    leader = next((m.name for m in members if m.is_leader), None)
    return EtcdClusterStatus(members=members, leader=leader)
