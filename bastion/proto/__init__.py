"""Pure, sans-IO protocol pieces: bytes in, bytes or events out; no asyncio, sockets, sqlite or clock."""
