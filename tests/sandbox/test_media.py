"""Hosted files are real and decodable, deterministic per name, and readable by any byte range."""

from __future__ import annotations

import hashlib
import struct
import wave
import zlib
from io import BytesIO

import pytest

from sandbox import media
from sandbox.hosting import RangeNotSatisfiable, parse_range

SIZE = 200_000
TRACK = "1600a35a-0999-40d8-b6f6-75cc81e74ef5"

# MPEG-1 Layer III bit rates (kbit/s) and sample rates (Hz) by header index.
BITRATES = [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320]
RATES = [44100, 48000, 32000]


def mp3_frames(data: bytes) -> list[int]:
    """Walk the MPEG frames after the ID3 tag; the list of frame lengths. Fails on any bad header."""
    assert data[:3] == b"ID3"
    tag_size = 0
    for byte in data[6:10]:
        tag_size = (tag_size << 7) | byte
    position, lengths = 10 + tag_size, []
    while position < len(data):
        header = data[position : position + 4]
        assert header[0] == 0xFF and header[1] & 0xE0 == 0xE0, f"lost sync at {position}"
        assert (header[1] >> 3) & 3 == 3 and (header[1] >> 1) & 3 == 1, "not MPEG-1 Layer III"
        bitrate, rate = BITRATES[header[2] >> 4] * 1000, RATES[(header[2] >> 2) & 3]
        length = 144 * bitrate // rate + ((header[2] >> 1) & 1)
        lengths.append(length)
        position += length
    assert position == len(data), "trailing bytes after the last frame"
    return lengths


def test_mp3_is_an_id3_tag_then_whole_mpeg_frames_of_the_reported_duration() -> None:
    data = b"".join(media.mp3(f"{TRACK}.mp3", SIZE).chunks())
    frames = mp3_frames(data)
    assert len(frames) * 1152 / 48000 == pytest.approx(media.duration_of(TRACK, SIZE), abs=0.01)
    assert f"{TRACK}.mp3".encode() in data[:200]


def test_mp3_size_is_close_to_the_configured_size() -> None:
    assert SIZE * 0.85 < media.mp3(f"{TRACK}.mp3", SIZE).size <= SIZE


def test_files_of_different_tracks_differ_and_the_same_name_gives_the_same_bytes() -> None:
    first = b"".join(media.mp3("aaaa.mp3", SIZE).chunks())
    again = b"".join(media.mp3("aaaa.mp3", SIZE).chunks())
    other = b"".join(media.mp3("bbbb.mp3", SIZE).chunks())
    assert first == again
    assert hashlib.sha256(first).digest() != hashlib.sha256(other).digest()


def test_wav_opens_as_pcm_of_the_track_duration() -> None:
    data = b"".join(media.wav(f"{TRACK}.wav", SIZE).chunks())
    with wave.open(BytesIO(data)) as reader:
        assert (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) == (1, 2, 8000)
        assert reader.getnframes() / 8000 == pytest.approx(media.duration_of(TRACK, SIZE), abs=0.01)


def test_png_chunks_have_valid_crcs_and_the_image_decompresses() -> None:
    data = b"".join(media.png(f"{TRACK}.png").chunks())
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, kinds, pixels = 8, [], b""
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind, body = data[position + 4 : position + 8], data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert zlib.crc32(kind + body) == crc
        kinds.append(kind)
        pixels += body if kind == b"IDAT" else b""
        position += 12 + length
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND"
    assert len(zlib.decompress(pixels)) == 16 * (1 + 16 * 3)


def test_mp4_is_a_sequence_of_iso_boxes_starting_with_ftyp() -> None:
    data = b"".join(media.mp4(f"{TRACK}.mp4", SIZE).chunks())
    position, kinds = 0, []
    while position < len(data):
        (size,) = struct.unpack(">I", data[position : position + 4])
        kinds.append(data[position + 4 : position + 8])
        position += size
    assert position == len(data)
    assert kinds == [b"ftyp", b"moov", b"free"]


@pytest.mark.parametrize(
    "name", [f"{TRACK}.mp3", f"{TRACK}_stream", f"{TRACK}.wav", f"{TRACK}.mp4", "x_0.png"]
)
@pytest.mark.parametrize(("start", "end"), [(0, 10), (5, 70_000), (65_536, 131_073), (150_000, None)])
def test_any_byte_range_equals_the_slice_of_the_whole_file(name: str, start: int, end: int | None) -> None:
    file = media.media_for(name, SIZE)
    assert file is not None
    whole = b"".join(file.chunks())
    stop = min(file.size, end if end is not None else file.size)
    assert b"".join(file.chunks(min(start, stop), stop)) == whole[min(start, stop) : stop]


def test_chunks_never_exceed_64_kb() -> None:
    assert max(len(piece) for piece in media.mp3("big.mp3", 3_000_000).chunks()) <= 64 * 1024


def test_a_hundred_megabyte_file_is_described_without_building_it() -> None:
    big = media.mp3(
        "big.mp3", media.MAX_FILE_BYTES if hasattr(media, "MAX_FILE_BYTES") else 100 * 1024 * 1024
    )
    assert big.size > 99 * 1024 * 1024
    assert len(big.head) + len(big.block) < 1024


def test_expected_sha256_matches_the_bytes_for_a_url() -> None:
    url = f"http://127.0.0.1:1/files/task/{TRACK}.mp3"
    assert media.expected_sha256(url, SIZE) == hashlib.sha256(media.expected_bytes(url, SIZE)).hexdigest()


def test_expected_bytes_refuses_names_the_sandbox_never_makes() -> None:
    with pytest.raises(ValueError, match="not a sandbox file"):
        media.expected_bytes("http://127.0.0.1:1/files/task/readme.txt", SIZE)


RANGES = [
    (None, None),
    ("bytes=0-99", (0, 100)),
    ("bytes=100-", (100, 1000)),
    ("bytes=-100", (900, 1000)),
    ("bytes=990-5000", (990, 1000)),
    ("bytes=0-0", (0, 1)),
    ("items=0-5", None),
    ("bytes=0-5,10-20", None),
    ("bytes=abc-", None),
]


@pytest.mark.parametrize(("header", "expected"), RANGES)
def test_range_header_parsing(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=2000-3000", "bytes=-0", "bytes=50-10"])
def test_unsatisfiable_ranges_are_refused(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 1000)
