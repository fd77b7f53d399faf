"""The hosted files: real, decodable, deterministic per name, readable by range without building them.

A file is a few literal segments and one long run of a repeated block, so a 100 MB MP3 costs a few
hundred bytes of memory. Its bytes depend only on its name and the configured size, so a test can
compute the sha256 of any URL the sandbox hands out (`expected_bytes`, `expected_sha256`).

- MP3: an ID3v2.3 tag naming the file, then MPEG-1 Layer III frames of silence (48 kHz, 128 kbit/s,
  mono; 384 bytes and 24 ms each). The frame count varies a little per track, so durations differ.
- WAV: PCM 16-bit mono 8 kHz silence of the track's duration, with a LIST/INFO chunk naming the file.
- PNG: a small solid-colour image whose colour and text chunk come from the name.
- MP4: an ISO-BMFF container (ftyp + moov/mvhd of the track's duration) padded with a `free` box;
  structurally valid, with no media tracks.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

CHUNK = 64 * 1024  # 64 KB: the chunk size the performance notes found fastest for httpx downloads
FRAME_BYTES = 384
FRAME_SECONDS = 1152 / 48000
# Sync, MPEG-1, Layer III, no CRC | 128 kbit/s, 48 kHz, no padding | mono. Side info and main data all
# zero: part2_3_length 0 in both granules, which decodes to silence.
SILENT_FRAME = bytes([0xFF, 0xFB, 0x94, 0xC0]) + bytes(FRAME_BYTES - 4)
WAV_RATE = 8000
PNG_SIDE = 16


@dataclass(frozen=True)
class Media:
    content_type: str
    head: bytes
    block: bytes
    repeat: int
    tail: bytes = b""

    @property
    def size(self) -> int:
        return len(self.head) + len(self.block) * self.repeat + len(self.tail)

    @property
    def etag(self) -> str:
        digest = hashlib.sha256(self.head + self.block + self.tail + str(self.repeat).encode()).hexdigest()
        return f'"{digest[:32]}"'

    def chunks(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Bytes [start, end) in pieces of at most CHUNK bytes."""
        end = self.size if end is None else end
        position = start
        while position < end:
            piece = self._piece_at(position, min(end, position + CHUNK))
            position += len(piece)
            yield piece

    def _piece_at(self, start: int, end: int) -> bytes:
        body_start, tail_start = len(self.head), len(self.head) + len(self.block) * self.repeat
        if start < body_start:
            return self.head[start : min(end, body_start)]
        if start >= tail_start:
            return self.tail[start - tail_start : end - tail_start]
        offset = (start - body_start) % len(self.block)
        stop = min(end, tail_start)
        # Whole blocks from `offset` onwards, cut to length: one allocation per chunk.
        count = (offset + stop - start) // len(self.block) + 1
        return (self.block * count)[offset : offset + stop - start]


def _digest(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


def track_key(name: str) -> str:
    """The track a file belongs to: `<id>.mp3`, `<id>_stream`, `<id>.wav` all share `<id>`."""
    return name.split(".")[0].split("_")[0]


def mp3_frames(name: str, file_bytes: int) -> int:
    jitter = _digest(track_key(name))[0] % 64
    return max(1, (file_bytes - 512) // FRAME_BYTES - jitter)


def duration_of(name: str, file_bytes: int) -> float:
    """Seconds of audio in the track `name` belongs to, as callbacks and record-info report it."""
    return round(mp3_frames(name, file_bytes) * FRAME_SECONDS, 2)


def _id3_frame(frame_id: str, text: str) -> bytes:
    payload = b"\x00" + text.encode("latin-1", "replace")
    return frame_id.encode() + struct.pack(">I", len(payload)) + b"\x00\x00" + payload


def _syncsafe(value: int) -> bytes:
    return bytes((value >> shift) & 0x7F for shift in (21, 14, 7, 0))


def mp3(name: str, file_bytes: int) -> Media:
    frames = _id3_frame("TIT2", name) + _id3_frame("TSSE", "tapedeck sandbox")
    tag = b"ID3\x03\x00\x00" + _syncsafe(len(frames)) + frames
    return Media("audio/mpeg", tag, SILENT_FRAME, mp3_frames(name, file_bytes))


def wav(name: str, file_bytes: int) -> Media:
    samples = round(duration_of(name, file_bytes) * WAV_RATE)
    label = name.encode() + b"\x00" * (2 - len(name) % 2)  # INFO strings are NUL-terminated, even-sized
    info = b"INFO" + b"INAM" + struct.pack("<I", len(label)) + label
    list_chunk = b"LIST" + struct.pack("<I", len(info)) + info
    fmt = b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, WAV_RATE, WAV_RATE * 2, 2, 16)
    data_size = samples * 2
    riff_size = 4 + len(fmt) + len(list_chunk) + 8 + data_size
    head = b"RIFF" + struct.pack("<I", riff_size) + b"WAVE" + fmt + list_chunk
    head += b"data" + struct.pack("<I", data_size)
    block_count, remainder = divmod(data_size, 4096)
    return Media("audio/wav", head, bytes(4096), block_count, bytes(remainder))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(name: str) -> Media:
    red, green, blue = _digest(name)[:3]
    row = b"\x00" + bytes([red, green, blue]) * PNG_SIDE
    header = struct.pack(">IIBBBBB", PNG_SIDE, PNG_SIDE, 8, 2, 0, 0, 0)
    body = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"tEXt", b"Title\x00" + name.encode())
        + _png_chunk(b"IDAT", zlib.compress(row * PNG_SIDE, 9))
        + _png_chunk(b"IEND", b"")
    )
    return Media("image/png", body, b"", 0)


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def mp4(name: str, file_bytes: int) -> Media:
    timescale, duration = 1000, round(duration_of(name, file_bytes) * 1000)
    mvhd = struct.pack(">BBBBIIII", 0, 0, 0, 0, 0, 0, timescale, duration)
    mvhd += struct.pack(">IH", 0x00010000, 0x0100) + bytes(10)
    mvhd += struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000) + bytes(24)
    mvhd += struct.pack(">I", 1)
    head = _box(b"ftyp", b"isom" + struct.pack(">I", 512) + b"isomiso2mp41") + _box(
        b"moov", _box(b"mvhd", mvhd)
    )
    label = name.encode()
    padding = max(0, file_bytes - len(head) - 8 - len(label))
    free_head = struct.pack(">I", 8 + len(label) + padding) + b"free" + label
    block_count, remainder = divmod(padding, 4096)
    return Media("video/mp4", head + free_head, bytes(4096), block_count, bytes(remainder))


def media_for(name: str, file_bytes: int) -> Media | None:
    """The file a hosted name stands for; None when the name is not one the sandbox makes."""
    if name.endswith(".mp3") or name.endswith("_stream"):
        return mp3(name, file_bytes)
    if name.endswith(".wav"):
        return wav(name, file_bytes)
    if name.endswith(".png"):
        return png(name)
    if name.endswith(".mp4"):
        return mp4(name, file_bytes)
    return None


def expected_bytes(url: str, file_bytes: int) -> bytes:
    """The whole content the sandbox serves at `url` (a test helper: builds it in memory)."""
    media = media_for(urlsplit(url).path.rsplit("/", 1)[-1], file_bytes)
    if media is None:
        raise ValueError(f"not a sandbox file: {url}")
    return b"".join(media.chunks())


def expected_sha256(url: str, file_bytes: int) -> str:
    """sha256 hex of the content at `url`, computed chunk by chunk without holding the file."""
    media = media_for(urlsplit(url).path.rsplit("/", 1)[-1], file_bytes)
    if media is None:
        raise ValueError(f"not a sandbox file: {url}")
    digest = hashlib.sha256()
    for piece in media.chunks():
        digest.update(piece)
    return digest.hexdigest()
