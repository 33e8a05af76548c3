"""A fault-injecting TCP proxy for peer traffic: each member advertises the
proxy's address as its peer URL, so everything sent to that member passes
through it. ``block()`` cuts the member off from what its peers send
(existing connections are dropped, new ones closed at once); ``heal()``
restores it. Runs its own event loop in a thread."""

from __future__ import annotations

import asyncio
import socket
import threading


class Proxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.blocked = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True))
        self._ready.set()
        self._loop.run_forever()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.blocked:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        pair = {writer, up_writer}
        self._writers |= pair
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True)
        self._writers -= pair

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while not self.blocked:
                data = await reader.read(65536)
                if not data or self.blocked:
                    break
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    def _close_all(self) -> None:
        for w in list(self._writers):
            w.close()

    def block(self) -> None:
        self.blocked = True
        self._loop.call_soon_threadsafe(self._close_all)

    def heal(self) -> None:
        self.blocked = False

    def close(self) -> None:
        self.block()

        async def shutdown() -> None:
            self._server.close()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
