"""WAV-file audio for desktops and tests: a recorded "mic" and a speaker that records.

The mic replays a 16 kHz recording on every push-to-talk cue, then keeps
delivering silence (a mic never ends). The speaker writes what the model said
to a 24 kHz WAV whose header is kept valid while the daemon runs, so the file
can be inspected (or asserted on) without stopping anything.
"""

from __future__ import annotations

import errno
import os
import shlex
import wave
from typing import BinaryIO

from .base import (
    DEFAULT_SPEAKER_BUFFER_S,
    MIC_RATE,
    SAMPLE_WIDTH,
    AudioConfigError,
    PacedMicrophone,
    PacedSpeaker,
)

# Bounds memory: the whole recording is held so reads never touch the disk.
MAX_INPUT_S = 600
# RIFF sizes are 32-bit: past this the header cannot describe the data.
MAX_WAV_DATA_BYTES = 0xFFFFFFFF - 36


def _sox_hint(path: str) -> str:
    out = os.path.splitext(path)[0] + "-16k.wav"
    return (
        f"convert it with: sox {shlex.quote(path)} -r {MIC_RATE} -c 1 -b {8 * SAMPLE_WIDTH} "
        f"{shlex.quote(out)}"
    )


def load_mic_wav(path: str) -> bytes:
    """The PCM of a 16 kHz mono 16-bit WAV; for anything else, an error saying how to fix it."""
    try:
        with wave.open(path, "rb") as w:
            rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
            if (rate, channels, width) != (MIC_RATE, 1, SAMPLE_WIDTH):
                raise AudioConfigError(
                    f"input WAV {path} is {rate} Hz, {channels} channel(s), {8 * width}-bit; "
                    f"the microphone needs {MIC_RATE} Hz mono {8 * SAMPLE_WIDTH}-bit: "
                    + _sox_hint(path)
                )
            if w.getnframes() > MAX_INPUT_S * MIC_RATE:
                raise AudioConfigError(
                    f"input WAV {path} is longer than {MAX_INPUT_S} s; use a shorter recording"
                )
            pcm = w.readframes(w.getnframes())
    except FileNotFoundError:
        raise AudioConfigError(f"input WAV {path} does not exist") from None
    except OSError as exc:
        raise AudioConfigError(f"cannot read input WAV {path}: {exc.strerror or exc}") from None
    except (wave.Error, EOFError) as exc:
        # Not RIFF/WAVE, truncated, or not plain PCM (float, WAVE_FORMAT_EXTENSIBLE).
        raise AudioConfigError(
            f"input WAV {path} is not a readable 16-bit PCM WAV file ({exc or 'truncated'}); "
            + _sox_hint(path)
        ) from None
    return pcm[: len(pcm) - len(pcm) % SAMPLE_WIDTH]  # a truncated file may end mid-sample


class WavMicrophone(PacedMicrophone):
    """Replays a 16 kHz mono 16-bit WAV at real-time pace, then silence; ``cue`` rewinds.

    ``path`` None or "" gives silence only (a mic with nobody talking).
    """

    def __init__(self, path: str | None, chunk_ms: int = 40, speed: float = 1.0) -> None:
        super().__init__(chunk_ms=chunk_ms, speed=speed)
        self.path = path or ""
        self._pcm = load_mic_wav(self.path) if self.path else b""
        self._pos = 0
        self.counters["cues"] = 0

    def cue(self) -> None:
        self._pos = 0
        self.counters["cues"] += 1

    def _next_chunk(self) -> bytes:
        if self._pos >= len(self._pcm):
            return self._silence
        chunk = self._pcm[self._pos : self._pos + self.chunk_bytes]
        self._pos += len(chunk)
        # The recording's tail rarely fills a chunk: pad it with silence.
        return chunk + self._silence[len(chunk) :]


class WavSpeaker(PacedSpeaker):
    """Writes the played audio to a 24 kHz mono 16-bit WAV at ``path``.

    Blocks go in with ``writeframesraw`` (no seeking per block); at the end of
    each utterance ``writeframes(b"")`` makes the ``wave`` module patch the
    RIFF and data sizes (its documented "make sure nframes is correct") and the
    file is flushed, so readers see a valid WAV between utterances; ``close``
    does the same. The file is created (with a valid empty header) at once, so a
    bad path fails at startup rather than at the first reply.
    """

    def __init__(
        self, path: str, speed: float = 1.0, *, max_buffer_s: float = DEFAULT_SPEAKER_BUFFER_S
    ) -> None:
        super().__init__(speed=speed, max_buffer_s=max_buffer_s)
        if not path:
            raise AudioConfigError("output WAV path is empty")
        self.path = path
        try:
            # Closed in _close_sink: the file lives as long as the speaker.
            self._fh: BinaryIO = open(path, "wb")  # noqa: SIM115
        except FileNotFoundError:
            raise AudioConfigError(
                f"cannot create output WAV {path}: directory "
                f"{os.path.dirname(os.path.abspath(path))} does not exist"
            ) from None
        except OSError as exc:
            raise AudioConfigError(
                f"cannot create output WAV {path}: {exc.strerror or exc}"
            ) from None
        try:
            self._wav = wave.open(self._fh, "wb")  # noqa: SIM115
            self._wav.setnchannels(1)
            self._wav.setsampwidth(SAMPLE_WIDTH)
            self._wav.setframerate(self.rate)
            self._wav.writeframes(b"")
            self._fh.flush()
        except OSError as exc:
            self._fh.close()
            raise AudioConfigError(
                f"cannot write output WAV {path}: {exc.strerror or exc}"
            ) from None
        self._data_bytes = 0

    def _write(self, block: bytes) -> None:
        if self._data_bytes + len(block) > MAX_WAV_DATA_BYTES:
            raise OSError(errno.EFBIG, f"{self.path} reached the WAV size limit (4 GiB)")
        self._wav.writeframesraw(block)
        self._data_bytes += len(block)

    def _utterance_ended(self) -> None:
        self._wav.writeframes(b"")
        self._fh.flush()

    def _close_sink(self) -> None:
        try:
            self._wav.close()  # patches the header and flushes; leaves our file object open
        finally:
            self._fh.close()
