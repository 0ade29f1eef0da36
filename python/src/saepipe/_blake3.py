"""BLAKE3 of short inputs (one chunk, at most 1024 bytes), in pure Python.

The run index names its files with the first 8 hex digits of the BLAKE3 hash
of the stage instance's id; nothing else here needs BLAKE3, so only the
single-chunk case is implemented.
"""

from __future__ import annotations

_IV = (0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19)
_PERM = (2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8)
_CHUNK_START, _CHUNK_END, _ROOT = 1, 2, 8
_M = 0xFFFFFFFF
CHUNK_LEN = 1024


def _rotr(x: int, n: int) -> int:
    return ((x >> n) | (x << (32 - n))) & _M


def _g(s: list, a: int, b: int, c: int, d: int, x: int, y: int) -> None:
    s[a] = (s[a] + s[b] + x) & _M
    s[d] = _rotr(s[d] ^ s[a], 16)
    s[c] = (s[c] + s[d]) & _M
    s[b] = _rotr(s[b] ^ s[c], 12)
    s[a] = (s[a] + s[b] + y) & _M
    s[d] = _rotr(s[d] ^ s[a], 8)
    s[c] = (s[c] + s[d]) & _M
    s[b] = _rotr(s[b] ^ s[c], 7)


def _compress(cv: list, block: bytes, block_len: int, flags: int) -> list:
    m = [int.from_bytes(block[4 * i : 4 * i + 4], "little") for i in range(16)]
    s = list(cv) + list(_IV[:4]) + [0, 0, block_len, flags]
    for r in range(7):
        _g(s, 0, 4, 8, 12, m[0], m[1])
        _g(s, 1, 5, 9, 13, m[2], m[3])
        _g(s, 2, 6, 10, 14, m[4], m[5])
        _g(s, 3, 7, 11, 15, m[6], m[7])
        _g(s, 0, 5, 10, 15, m[8], m[9])
        _g(s, 1, 6, 11, 12, m[10], m[11])
        _g(s, 2, 7, 8, 13, m[12], m[13])
        _g(s, 3, 4, 9, 14, m[14], m[15])
        if r < 6:
            m = [m[i] for i in _PERM]
    return [s[i] ^ s[i + 8] for i in range(8)]


def blake3_hex(data: bytes) -> str:
    """The BLAKE3 hash (32 bytes, lowercase hex) of `data`, at most 1024 bytes."""
    if len(data) > CHUNK_LEN:
        raise ValueError(f"blake3_hex handles inputs of at most {CHUNK_LEN} bytes, got {len(data)}")
    blocks = [data[i : i + 64] for i in range(0, len(data), 64)] or [b""]
    cv = list(_IV)
    for i, block in enumerate(blocks):
        flags = (_CHUNK_START if i == 0 else 0) | (_CHUNK_END | _ROOT if i == len(blocks) - 1 else 0)
        cv = _compress(cv, block.ljust(64, b"\0"), len(block), flags)
    return b"".join(w.to_bytes(4, "little") for w in cv).hex()
