"""SIGTERM under load: the node drains, exits cleanly, and every write it
acknowledged is there after a restart."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from aspen import AspenError, Client
from tests.node.node_process import HTTP_SERVERS, NodeProcess


@pytest.mark.parametrize("server", HTTP_SERVERS)
async def test_sigterm_under_load_loses_no_acknowledged_write(tmp_path, server):
    data = tmp_path / "data"
    proc = NodeProcess(data, "--http-server", server).start()
    acked: dict[str, bytes] = {}
    stop = asyncio.Event()

    async def writer(n: int) -> None:
        async with Client(proc.url, retries=1, encoding="json" if n % 2 else "msgpack") as c:
            i = 0
            while not stop.is_set():
                key, value = f"sd/{n}/{i:06}", f"value {n} {i}".encode()
                try:
                    await c.write_key(key, value)
                except AspenError:
                    return  # node gone: this write was never acknowledged
                acked[key] = value
                i += 1

    try:
        async with (
            httpx.AsyncClient(timeout=None) as h,
            h.stream("GET", f"{proc.url}/v1/watch", params={"prefix": "sd/"}) as watch,
        ):
            writers = [asyncio.ensure_future(writer(n)) for n in range(8)]
            await asyncio.sleep(1.5)
            assert acked, "no write went through before the signal"
            t0 = time.monotonic()
            code = await asyncio.to_thread(proc.terminate, 30)
            elapsed = time.monotonic() - t0
            stop.set()
            await asyncio.wait_for(asyncio.gather(*writers), 30)
            # the open watch stream did not hold up shutdown; it was ended
            async for _ in watch.aiter_lines():
                pass
        assert code == 0, proc.log()
        assert "stores closed" in proc.log()
        print(f"shutdown took {elapsed:.2f}s, {len(acked)} acknowledged writes")
        assert elapsed < 10, f"shutdown took {elapsed:.1f}s"
    finally:
        proc.kill()

    with NodeProcess(data, port=proc.port) as again:
        async with Client(again.url) as c:
            for chunk in [list(acked)[i : i + 500] for i in range(0, len(acked), 500)]:
                got = await c.batch_read(chunk)
                missing = [k for k, kv in zip(chunk, got.entries) if kv is None or kv.value != acked[k]]
                assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:3]}"
    assert len(acked) > 50, len(acked)
