"""Token verification and per-request authorisation.

A token is verified once (≈100 µs: parse and signature) and the result is
cached, keyed by the token text and bounded; revocations clear the cache.
Each request then checks its :class:`~aspen.rpc.access.Need` list with
Biscuit's authorizer (≈20 µs each). A decision depends only on the token,
the need, the request type and the time fact, which has one-second
precision, so decisions are cached for the second they were made in.

Refusals are checked in this order, each with its own code:
``UNAUTHENTICATED`` (no or unreadable token), ``INVALID_SIGNATURE``,
``TOKEN_EXPIRED``, ``TOKEN_REVOKED``, ``WRONG_AUDIENCE``, ``UNAUTHORIZED``.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import TypeVar

import biscuit_auth as bz

from aspen.auth.tokens import ANY, EXPLICIT_ONLY, TokenFacts, read_facts, unverified
from aspen.errors import AspenError, ErrorCode
from aspen.rpc.access import Need

# The node's side of the vocabulary: rights cover a resource exactly, by
# prefix (keys), or through "*" (except the explicit-only job types).
POLICIES = """
allow if operation($op), resource($r), match("prefix"), right($op, $p), $r.starts_with($p);
allow if operation($op), resource($r), right($op, $r);
allow if operation($op), wildcard(true), right($op, "*");
"""
REQUEST_FACTS = """
operation({op}); resource({res}); match({match}); wildcard({wild});
request_type({rtype}); time({now}); audience({aud});
"""
MAX_CACHED_TOKENS = 4096
MAX_CACHED_DECISIONS = 16384
# Biscuit's default budget is 1 ms of Datalog, which a busy 2-core machine
# overruns now and then (a preempted thread): a spurious denial. Our tokens
# need microseconds; 50 ms still bounds a hostile token (at most 16 KiB).
MAX_DATALOG_TIME = dt.timedelta(milliseconds=50)


T = TypeVar("T")


def _bounded(builder: bz.AuthorizerBuilder) -> bz.AuthorizerBuilder:
    limits = builder.limits()
    limits.max_time = MAX_DATALOG_TIME
    builder.set_limits(limits)
    return builder


def within_budget(evaluate: Callable[[], T]) -> T:
    """Run one Datalog evaluation under :data:`MAX_DATALOG_TIME`. Biscuit's
    budget is wall-clock time, so a thread preempted on a starved machine can
    overrun it with a benign token (seen under load 13): when the overrun used
    less than half the budget in this thread's CPU time, the machine took the
    time, not the token, and the evaluation runs once more. A token that
    really burns the budget is refused after one try."""
    started = time.thread_time()
    try:
        return evaluate()
    except bz.AuthorizationError as exc:
        if "execution limits" not in str(exc) or time.thread_time() - started >= MAX_DATALOG_TIME.total_seconds() / 2:
            raise
    return evaluate()


class Principal:
    """A verified token: who is calling and what their token says of itself."""

    __slots__ = ("expires_epoch", "facts", "lineage", "subject", "text", "token")

    def __init__(self, subject: str, token: bz.Biscuit, text: str, facts: TokenFacts, ancestors: Iterable[str]) -> None:
        self.subject = subject
        self.token = token
        self.text = text
        self.facts = facts
        # its own block ids and those of the tokens it was created from: revoking any revokes it
        self.lineage = frozenset([*facts.revocation_ids, *ancestors])
        self.expires_epoch = facts.expires_at.timestamp() if facts.expires_at else float("inf")


class TokenVerifier:
    def __init__(self, public_key: bz.PublicKey, cluster_id: str, is_revoked: Callable[[frozenset[str]], bool]) -> None:
        self.public_key = public_key
        self.cluster_id = cluster_id
        self._is_revoked = is_revoked
        self._tokens: OrderedDict[str, Principal] = OrderedDict()
        self._decisions: dict[tuple, tuple[int, bool]] = {}

    def forget(self) -> None:
        """Drop every cached verification and decision (after a revocation)."""
        self._tokens.clear()
        self._decisions.clear()

    # --- authentication -------------------------------------------------------

    def authenticate(self, text: str | None) -> Principal:
        if not text:
            raise AspenError(ErrorCode.UNAUTHENTICATED, "this node needs a token (ASPEN_TOKEN, --token or token=)")
        principal = self._tokens.get(text)
        if principal is None:
            principal = self._verify(text)
        if time.time() >= principal.expires_epoch:
            raise AspenError(
                ErrorCode.TOKEN_EXPIRED, f"the token expired at {principal.facts.expires_at:%Y-%m-%dT%H:%M:%SZ}"
            )
        return principal

    def _verify(self, text: str) -> Principal:
        unverified(text)  # unreadable: UNAUTHENTICATED, before any signature check
        try:
            token = bz.Biscuit.from_base64(text.strip(), self.public_key)
        except (bz.BiscuitValidationError, bz.BiscuitSerializationError, ValueError):
            raise AspenError(
                ErrorCode.INVALID_SIGNATURE, "the token is not signed by this cluster's root key"
            ) from None
        facts = read_facts(token)
        if facts.expires_at is not None and time.time() >= facts.expires_at.timestamp():
            raise AspenError(ErrorCode.TOKEN_EXPIRED, f"the token expired at {facts.expires_at:%Y-%m-%dT%H:%M:%SZ}")
        try:
            authorizer = within_budget(lambda: _bounded(bz.AuthorizerBuilder()).build(token))
            subjects = [f.terms[0] for f in within_budget(lambda: authorizer.query(bz.Rule("s($s) <- subject($s)")))]
            ancestors = [f.terms[0] for f in within_budget(lambda: authorizer.query(bz.Rule("a($a) <- ancestor($a)")))]
        except bz.AuthorizationError:
            raise AspenError(
                ErrorCode.UNAUTHENTICATED, "the token's Datalog exceeds the node's evaluation limits"
            ) from None
        principal = Principal(str(subjects[0]) if subjects else "anonymous", token, text, facts, map(str, ancestors))
        if self._is_revoked(principal.lineage):
            raise AspenError(ErrorCode.TOKEN_REVOKED, "the token (or one it was made from) has been revoked")
        if facts.audiences and facts.audiences != {self.cluster_id}:
            raise AspenError(
                ErrorCode.WRONG_AUDIENCE,
                f"the token is for {sorted(facts.audiences)}, this cluster is {self.cluster_id!r}",
            )
        if len(self._tokens) >= MAX_CACHED_TOKENS:
            self._tokens.popitem(last=False)
        self._tokens[text] = principal
        return principal

    # --- authorisation -------------------------------------------------------

    def allows(self, principal: Principal, need: Need, request_type: str) -> bool:
        second = int(time.time())
        key = (principal.text, request_type, need)
        hit = self._decisions.get(key)
        if hit is not None and hit[0] == second:
            return hit[1]
        allowed = self._decide(principal.token, need, request_type, second)
        if len(self._decisions) >= MAX_CACHED_DECISIONS:
            self._decisions.clear()
        self._decisions[key] = (second, allowed)
        return allowed

    def _decide(self, token: bz.Biscuit, need: Need, request_type: str, second: int) -> bool:
        wildcard = need.resource not in EXPLICIT_ONLY.get(need.operation, ())
        builder = bz.AuthorizerBuilder(
            REQUEST_FACTS + POLICIES,
            {
                "op": need.operation,
                "res": need.resource,
                "match": "prefix" if need.prefix else "exact",
                "wild": wildcard,
                "rtype": request_type,
                "now": dt.datetime.fromtimestamp(second, dt.UTC),
                "aud": self.cluster_id,
            },
        )
        try:
            within_budget(lambda: _bounded(builder).build(token).authorize())
        except bz.AuthorizationError as exc:
            if "execution limits" in str(exc):
                raise AspenError(
                    ErrorCode.UNAUTHORIZED, "the token's Datalog exceeds the node's evaluation limits"
                ) from None
            return False
        return True

    def authorize(self, principal: Principal, request_type: str, needs: Iterable[Need]) -> None:
        """Raise ``UNAUTHORIZED`` naming the first need the token does not meet."""
        for need in needs:
            if not self.allows(principal, need, request_type):
                shown = need.resource if need.resource != ANY else "*"
                raise AspenError(
                    ErrorCode.UNAUTHORIZED,
                    f"{request_type} needs {need.operation} on {shown!r}, which the token does not grant",
                    operation=need.operation,
                    resource=need.resource,
                )
