"""Sample-rate, channel and gain conversion of s16le PCM between us and a device.

Only loaded when a device cannot run at our format or the volume is not 1:
numpy and soxr cost import time (and memory on a Pi Zero) that the common
case, a device opened at 16/24 kHz mono, never pays.
"""

from __future__ import annotations

import numpy as np

from .base import AudioConfigError

# soxr's "high quality": about 16-20 ms of delay, which is inaudible in a
# conversation, and clean enough that the model's speech recognition and the
# listener never hear aliasing.
QUALITY = "HQ"
_INT16 = np.dtype("<i2")


def _resample_stream(in_rate: int, out_rate: int) -> object:
    try:
        import soxr
    except ModuleNotFoundError:
        raise AudioConfigError(
            f"the device needs resampling ({in_rate} -> {out_rate} Hz), which needs soxr: "
            "pip install soxr"
        ) from None
    return soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=QUALITY)


class PcmConverter:
    """A streaming s16le converter: ``in_rate``/``in_channels`` to ``out_rate``/``out_channels``.

    Stateful (the resampler carries history across calls), so one converter
    serves one stream, fed from one thread. Several channels in are averaged
    to mono (a mic with one dead channel loses 6 dB rather than everything);
    mono out to several channels is copied to each.
    """

    def __init__(self, in_rate: int, out_rate: int, in_channels: int = 1, out_channels: int = 1):
        if in_channels != 1 and out_channels != 1:
            raise ValueError("only mono on one side is supported")
        self.in_rate, self.out_rate = in_rate, out_rate
        self.in_channels, self.out_channels = in_channels, out_channels
        self._rs = _resample_stream(in_rate, out_rate) if in_rate != out_rate else None
        self._in_frame = 2 * in_channels
        self._carry = b""  # a partial frame left over from the last call

    def process(self, pcm: bytes) -> bytes:
        """Convert the next piece of the stream (any length; partial frames are carried)."""
        if self._carry:
            pcm = self._carry + pcm
        cut = len(pcm) - len(pcm) % self._in_frame
        self._carry = pcm[cut:]
        if not cut:
            return b""
        x = np.frombuffer(pcm, _INT16, cut // 2)
        if self.in_channels > 1:
            x = (x.reshape(-1, self.in_channels).astype(np.int32).sum(axis=1)) // self.in_channels
            x = x.astype(_INT16)
        if self._rs is not None:
            x = self._rs.resample_chunk(x)  # type: ignore[attr-defined]
        return self._out(x)

    def drain(self) -> bytes:
        """The end of the stream: what the resampler still holds back; then start afresh."""
        if self._rs is None:
            self._carry = b""
            return b""
        tail = self._rs.resample_chunk(np.zeros(0, _INT16), last=True)  # type: ignore[attr-defined]
        self.reset()
        return self._out(tail)

    def reset(self) -> None:
        """Forget the stream so far (a barge-in: the next audio is unrelated)."""
        self._carry = b""
        if self._rs is not None:
            self._rs.clear()  # type: ignore[attr-defined]

    def _out(self, x: np.ndarray) -> bytes:
        if self.out_channels > 1:
            x = np.repeat(x, self.out_channels)
        return x.astype(_INT16, copy=False).tobytes()


def apply_gain(pcm: bytes, gain: float) -> bytes:
    """``pcm`` (s16le, whole samples) scaled by ``gain``, clipped rather than wrapped."""
    x = np.frombuffer(pcm, _INT16, len(pcm) // 2).astype(np.float32)
    x *= gain
    np.rint(x, out=x)
    np.clip(x, -32768, 32767, out=x)
    return x.astype(_INT16).tobytes()
