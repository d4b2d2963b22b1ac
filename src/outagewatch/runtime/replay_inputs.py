"""What `replay` reads: line batches with a length cap, and a ledger of what it committed.

`InputReader` cuts an input (a file or stdin) into batches of lines. It drops a UTF-8 byte
order mark at the very start, and rejects a line longer than `MAX_LINE_BYTES` (with its line
number) without holding it in memory, so `/dev/zero` or one enormous line cannot grow the
process. It counts the bytes and lines it hands out and hashes them as it goes.

The *ledger* records, per input, how far replay has committed: the byte offset, the line
number and a digest of every byte up to there (`InputMark`, stored with the pipeline state in
the same transaction). An input is recognised by its content, not its name: when it begins
with the exact bytes of a recorded input (the same file again, a copy, a file that has grown
since, or the same bytes piped into stdin), those bytes are skipped and replay goes on from
the recorded line. So a re-run, or a run resumed after an interruption, counts every line
once. A file that was edited before the recorded offset is a different input and is counted
whole.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import IO, Any, BinaryIO, overload

import numpy as np
import xxhash

from outagewatch.events import Rejection
from outagewatch.store.base import InputMark

BATCH_BYTES = 4 << 20  # read about this much per batch
MAX_LINE_BYTES = 1 << 20  # a longer line is rejected (an event is well under a kilobyte)
HEAD_BYTES = 4096  # the first bytes of an input: the ledger's quick pre-filter
BOM = b"\xef\xbb\xbf"
_VERIFY_CHUNK = 1 << 20


def _hasher(size: int = 16) -> Any:
    """A hasher of input bytes whose digest has `size` bytes: XXH3-128 (16), ~8x as fast as
    SHA-1 (6 ms against 45 for a 67 MiB input), or SHA-1 (20) for marks recorded before it.
    Not a security boundary (whoever can write the file can write anything): fast and wide
    enough that two different inputs never share a digest by accident."""
    if size == hashlib.sha1().digest_size:
        return hashlib.sha1(usedforsecurity=False)
    return xxhash.xxh3_128()


def _digest(data: bytes, size: int = 16) -> bytes:
    h = _hasher(size)
    h.update(data)
    return bytes(h.digest())


def _newlines(text: bytes) -> int:
    """How many newlines `text` holds (numpy compares 16 or 32 bytes at a time: about twice
    as fast as `bytes.count` on a batch)."""
    return int(np.count_nonzero(np.frombuffer(text, np.uint8) == 10))


class SplitLines(Sequence[bytes]):
    """The lines of `text` (`n` of them, joined by newlines), split only when a line is
    asked for: the compiled line scanner reads the text whole, and only lines it leaves to
    the exact decoder need to be bytes objects of their own."""

    def __init__(self, text: bytes, n: int) -> None:
        self.text = text
        self.n = n
        self._lines: list[bytes] | None = None

    def __len__(self) -> int:
        return self.n

    @overload
    def __getitem__(self, i: int) -> bytes: ...
    @overload
    def __getitem__(self, i: slice) -> list[bytes]: ...
    def __getitem__(self, i: int | slice) -> bytes | list[bytes]:
        if self._lines is None:
            self._lines = self.text.split(b"\n")
        return self._lines[i]


@dataclass
class Batch:
    lines: Sequence[bytes]  # without their newlines; an over-long line is left empty
    first_line: int  # the number of lines[0] in the input (1-based)
    rejected: list[Rejection]  # over-long lines
    nbytes: int  # bytes of the input this batch covers
    joined: bytes | None = None  # b"\n".join(lines), when the reader has it at no cost


class StopFlag:
    """Set by a signal handler: replay stops after the batch it is in. While the reader blocks
    in `read`, the handler raises `StopRequestedError` instead (nothing read is lost: the batch was
    not handed out, so it is neither fed nor in the ledger)."""

    def __init__(self) -> None:
        self.requested: str | None = None  # the signal's name
        self.in_read = False


class StopRequestedError(Exception):
    pass


class InputReader:
    """Line batches of one input, from byte `pos` (line `next_line`) on."""

    def __init__(
        self,
        f: BinaryIO | _Rewindable,
        *,
        pos: int = 0,
        next_line: int = 1,
        hasher: Any = None,
        stop: StopFlag | None = None,
        max_line: int = MAX_LINE_BYTES,
        batch_bytes: int = BATCH_BYTES,
    ) -> None:
        self.f = f
        self.pos = pos  # bytes handed out (and hashed) so far
        self.next_line = next_line  # the number of the line the next byte belongs to
        self.hash = hasher if hasher is not None else _hasher()
        self.stop = stop or StopFlag()
        self.max_line = max_line
        self.batch_bytes = batch_bytes
        self.first_bytes = b""  # the input's first HEAD_BYTES (set by `Ledger.open`)

    def _read(self) -> bytes:
        # read1: what is there (a pipe answers as soon as it has data), at most one batch.
        read = getattr(self.f, "read1", None) or self.f.read
        self.stop.in_read = True
        try:
            return bytes(read(self.batch_bytes))
        finally:
            self.stop.in_read = False

    def _consume(self, data: bytes | memoryview) -> None:
        self.hash.update(data)
        self.pos += len(data)

    def _too_long(self, line: int, n: int) -> Rejection:
        return Rejection(
            line, "line too long", f"{n:,} bytes, more than the {self.max_line:,} a line may have"
        )

    def _short_lines(self, text: bytes) -> bool:
        """Whether no line of `text` can be longer than `max_line`, found without splitting
        it: every stretch of `max_line // 2` bytes holds a newline, so no two newlines are
        `max_line` bytes apart (a few searches per batch). False says only "maybe"."""
        half = max(1, self.max_line // 2)
        find = text.find
        return all(find(b"\n", a, a + half) >= 0 for a in range(0, len(text) - half, half))

    def batches(self) -> Iterator[Batch]:
        pending = b""  # the start of a line not finished yet (at most max_line bytes)
        skipping = 0  # > 0: bytes of an over-long line dropped so far
        first = self.pos == 0
        while True:
            block = self._read()
            if not block:
                break
            if first:
                first = False
                if block.startswith(BOM):
                    self._consume(block[:3])
                    block = block[3:]
            if skipping:
                nl = block.find(b"\n")
                if nl < 0:
                    skipping += len(block)
                    self._consume(block)
                    continue
                skipping += nl
                self._consume(block[: nl + 1])
                yield Batch(
                    [b""], self.next_line, [self._too_long(self.next_line, skipping)], nl + 1
                )
                self.next_line += 1
                skipping = 0
                block = block[nl + 1 :]
            end = block.rfind(b"\n")  # the last newline of the block
            if end < 0:
                pending += block
                if len(pending) > self.max_line:
                    skipping = len(pending)
                    self._consume(pending)
                    pending = b""
                continue
            # The batch's text in one copy (pending, then the block up to its last newline),
            # hashed from the pieces it came from.
            view = memoryview(block)
            text = b"".join((pending, view[:end])) if pending else block[:end]
            cut = len(text)
            if pending:
                self._consume(pending)
            self._consume(view[: end + 1])
            pending = block[end + 1 :]
            lines: Sequence[bytes]
            joined: bytes | None = text
            rejected: list[Rejection] = []
            if self._short_lines(text):
                lines = SplitLines(text, _newlines(text) + 1)
            else:
                lines = text.split(b"\n")
                if max(map(len, lines)) > self.max_line:
                    for i, ln in enumerate(lines):
                        if len(ln) > self.max_line:
                            rejected.append(self._too_long(self.next_line + i, len(ln)))
                            lines[i] = b""
                    joined = None
            first_line = self.next_line
            self.next_line += len(lines)
            if len(pending) > self.max_line:
                skipping = len(pending)
                self._consume(pending)
                pending = b""
            yield Batch(lines, first_line, rejected, cut + 1, joined)
        if skipping:  # an over-long last line without a newline
            yield Batch([b""], self.next_line, [self._too_long(self.next_line, skipping)], 0)
        elif pending:  # a last line without a newline: its number stays the next line's
            self._consume(pending)
            yield Batch([pending], self.next_line, [], len(pending))


class _Rewindable:
    """A stream (stdin) that can go back to its start while the ledger compares it with a
    recorded input: what it reads is kept in a temporary file until `forget`."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.spool: IO[bytes] | None = tempfile.TemporaryFile()  # noqa: SIM115 (closed by read)
        self.spooled = 0
        self.at = 0
        self.recording = True

    def read1(self, n: int) -> bytes:
        if self.spool is not None and self.at < self.spooled:
            self.spool.seek(self.at)
            data = self.spool.read(min(n, self.spooled - self.at))
        else:
            if self.spool is not None and not self.recording:
                self.spool.close()
                self.spool = None
            read = getattr(self.stream, "read1", None) or self.stream.read
            data = read(n)
            if self.spool is not None:
                self.spool.seek(self.spooled)
                self.spool.write(data)
                self.spooled += len(data)
        self.at += len(data)
        return data

    read = read1

    def rewind(self) -> None:
        self.at = 0

    def forget(self) -> None:
        """No more rewinding: what was kept and not read yet is still served first."""
        self.recording = False


class Ledger:
    """The committed marks of every input replayed into one pipeline state."""

    def __init__(self, marks: list[InputMark]) -> None:
        self.marks = {m.id: m for m in marks}

    def open(
        self, f: BinaryIO, name: str, stop: StopFlag | None = None
    ) -> tuple[InputReader, InputMark]:
        """A reader positioned after what the ledger says was already replayed of `f`, and
        the input's mark (offset 0 when it is new)."""
        seekable = f.seekable()
        src: BinaryIO | _Rewindable = f if seekable else _Rewindable(f)
        head = _read_exactly(src, HEAD_BYTES)
        candidates = [
            m
            for m in self.marks.values()
            if m.offset > 0
            and len(head) >= min(m.offset, HEAD_BYTES)
            and _digest(head[: min(m.offset, HEAD_BYTES)], len(m.head)) == m.head
        ]
        found: tuple[InputMark, Any] | None = None
        for m in sorted(candidates, key=lambda m: (-m.offset, m.id)):
            h = self._prefix_hash(src, m.offset, len(m.digest))
            if h is not None and h.digest() == m.digest:
                found = (m, h)
                break
        if found is None:
            _rewind(src)
            if isinstance(src, _Rewindable):
                src.forget()
            mark = InputMark(uuid.uuid4().hex, name, b"", 0, 0, b"", time.time())
            reader = InputReader(src, stop=stop)
        else:
            mark, h = found
            if isinstance(src, _Rewindable):
                src.forget()
            reader = InputReader(
                src, pos=mark.offset, next_line=mark.lines + 1, hasher=h, stop=stop
            )
        reader.first_bytes = head
        return reader, mark

    @staticmethod
    def _prefix_hash(src: BinaryIO | _Rewindable, n: int, size: int) -> Any:
        """The hash (of digest size `size`: the mark's, `_hasher`) of the first `n` bytes of
        `src` (None when it is shorter); `src` is left just after them."""
        _rewind(src)
        h = _hasher(size)
        left = n
        while left > 0:
            data = _read1(src, min(left, _VERIFY_CHUNK))
            if not data:
                return None
            h.update(data)
            left -= len(data)
        return h

    def record(self, mark: InputMark, reader: InputReader, name: str) -> InputMark:
        """The input's mark after what `reader` handed out (all of it fed)."""
        if reader.pos == mark.offset:
            return mark
        new = replace(
            mark,
            name=name,
            # A mark goes on with its own hash (SHA-1 for one recorded before XXH3).
            head=_digest(
                reader.first_bytes[: min(reader.pos, HEAD_BYTES)], reader.hash.digest_size
            ),
            offset=reader.pos,
            lines=reader.next_line - 1,
            digest=bytes(reader.hash.copy().digest()),
            updated_at=time.time(),
        )
        self.marks[new.id] = new
        return new


def _read1(src: BinaryIO | _Rewindable, n: int) -> bytes:
    read = getattr(src, "read1", None) or src.read
    return bytes(read(n))


def _read_exactly(src: BinaryIO | _Rewindable, n: int) -> bytes:
    """`n` bytes of `src`, fewer only at its end."""
    parts: list[bytes] = []
    while n > 0:
        data = _read1(src, n)
        if not data:
            break
        parts.append(data)
        n -= len(data)
    return b"".join(parts)


def _rewind(src: BinaryIO | _Rewindable) -> None:
    if isinstance(src, _Rewindable):
        src.rewind()
    else:
        src.seek(0)
