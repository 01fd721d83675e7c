"""A TCP relay a test can cut: the client's connection to the server drops
as a lost network drops it — no closing tag, no TLS close_notify, no FIN
from either side's XMPP stack — while both ends are still running.

    proxy = await CutProxy.start(server.host, server.port)
    client.connect(proxy.host, proxy.port)
    ...
    proxy.cut()        # abort every relayed connection, both sides

The relay keeps listening, so the client can connect again through it.
"""

from __future__ import annotations

import asyncio


class CutProxy:
    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.host = "127.0.0.1"
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._links: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self.connections = 0

    @classmethod
    async def start(cls, host: str, port: int) -> CutProxy:
        proxy = cls(host, port)
        proxy._server = await asyncio.start_server(proxy._accept, proxy.host, 0)
        proxy.port = proxy._server.sockets[0].getsockname()[1]
        return proxy

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._links.append((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer),
                             return_exceptions=True)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            if not writer.is_closing():
                writer.close()

    def cut(self) -> None:
        """Drop every relayed connection at once (RST, not a clean close)."""
        links, self._links = self._links, []
        for down, up in links:
            for writer in (down, up):
                writer.transport.abort()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
