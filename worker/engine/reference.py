"""Reference audio: decoding, upstream's preprocessing, and the per-process cache of prepared voices.

Decoding uses soundfile (libsndfile), not ``torchaudio.load``, which needs torchcodec and FFmpeg. Preprocessing
follows upstream's ``preprocess_ref_audio_text`` through the same pydub calls (clip to at most 12 s at a long silence,
else a short one, else hard; trim silent edges; add 50 ms of silence), then upstream's inference-time steps (mono,
RMS raised to 0.1, resampled to 24 kHz). Every way a clip can be unusable is a :class:`BadInputError`.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from worker.errors import BadInputError
from worker.speech import MAX_PLANNING_SECONDS, MIN_REFERENCE_SECONDS, REFERENCE_CLIP_SECONDS, TARGET_RMS

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Couldn't find ffmpeg")
    from pydub import AudioSegment, silence

CLIP_MS = int(REFERENCE_CLIP_SECONDS * 1000)
_SILENT_PEAK = 1e-4
_FIELD = "voice.ref_audio"
# What a reference clip may be, before it is decoded: 60 s at 384 kHz in 8 channels would be 0.7 GB of float32.
MIN_REFERENCE_RATE = 8_000
MAX_REFERENCE_RATE = 192_000
MAX_REFERENCE_CHANNELS = 2


@dataclass(frozen=True)
class PreparedVoice:
    """A reference clip ready for the model: what every chunk spoken in this voice shares."""

    digest: str  # sha256 of the clip bytes and the preprocessing choice: the cache key
    audio: torch.Tensor  # (1, samples) at the model's rate, RMS-raised, on the engine's device, fp32
    rms: float  # RMS before raising: the output is scaled back by rms / 0.1 when it was below 0.1
    mel: torch.Tensor  # (frames, n_mels) mel spectrogram of ``audio``, on device, fp32
    seconds: float  # duration of the (preprocessed) clip, which upstream's chunk-size rule uses

    @property
    def ref_frames(self) -> int:
        """Upstream's ``ref_audio_len``: samples // hop (the mel has one frame more, from centre padding)."""
        return self.mel.shape[0] - 1


def voice_digest(data: bytes, preprocess: bool) -> str:
    return hashlib.sha256(data + (b"|pre" if preprocess else b"|raw")).hexdigest()


def decode(data: bytes, max_seconds: float) -> tuple[np.ndarray, int]:
    """Mono float32 samples and their rate, or a clear error for anything that is not usable speech."""
    if not data:
        raise BadInputError("bad_reference", "the reference audio file is empty", _FIELD)
    try:
        info = sf.info(io.BytesIO(data))
        if info.frames <= 0:
            raise BadInputError("bad_reference", "the reference audio has no samples", _FIELD)
        if info.channels > MAX_REFERENCE_CHANNELS:
            raise BadInputError("bad_reference", f"the reference has {info.channels} channels; at most "
                                f"{MAX_REFERENCE_CHANNELS} (mono or stereo) are accepted", _FIELD)
        if not MIN_REFERENCE_RATE <= info.samplerate <= MAX_REFERENCE_RATE:
            raise BadInputError("bad_reference", f"the reference is sampled at {info.samplerate} Hz; "
                                f"{MIN_REFERENCE_RATE}-{MAX_REFERENCE_RATE} Hz is accepted", _FIELD)
        if info.frames / info.samplerate > max_seconds:
            raise BadInputError(
                "bad_reference",
                f"the reference is {info.frames / info.samplerate:.1f} s long; at most {max_seconds:.0f} s is accepted "
                f"(F5-TTS uses at most 12 s of it; trim the clip)", _FIELD)
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        if isinstance(exc, BadInputError):
            raise
        raise BadInputError("bad_reference", f"the reference is not a readable audio file ({exc})", _FIELD) from None
    if samples.shape[0] == 0:
        raise BadInputError("bad_reference", "the reference audio has no samples", _FIELD)
    if not np.isfinite(samples).all():
        raise BadInputError("bad_reference", "the reference audio contains NaN or infinite samples", _FIELD)
    return samples.mean(axis=1), int(rate)


def _accumulate_until_12s(segments: list[AudioSegment]) -> AudioSegment:
    wave = AudioSegment.silent(duration=0)
    for segment in segments:
        if len(wave) > 6000 and len(wave + segment) > CLIP_MS:
            break
        wave += segment
    return wave


def _trim_edges(segment: AudioSegment, threshold: float = -42) -> AudioSegment:
    start = silence.detect_leading_silence(segment, silence_threshold=threshold)
    segment = segment[start:]
    end = silence.detect_leading_silence(segment.reverse(), silence_threshold=threshold)
    return segment[: len(segment) - end] if end > 0 else segment


def upstream_preprocess(samples: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
    """Upstream's clipping and trimming, on 16-bit PCM as upstream's WAV round trip has it."""
    pcm = np.clip(np.round(samples * 32768.0), -32768, 32767).astype("<i2")
    clip = AudioSegment(data=pcm.tobytes(), sample_width=2, frame_rate=rate, channels=1)
    wave = _accumulate_until_12s(silence.split_on_silence(
        clip, min_silence_len=1000, silence_thresh=-50, keep_silence=1000, seek_step=10))
    if len(wave) > CLIP_MS:
        wave = _accumulate_until_12s(silence.split_on_silence(
            clip, min_silence_len=100, silence_thresh=-40, keep_silence=1000, seek_step=10))
    if len(wave) > CLIP_MS:
        wave = wave[:CLIP_MS]
    wave = _trim_edges(wave) + AudioSegment.silent(duration=50)
    out = np.frombuffer(wave.raw_data, dtype="<i2").astype(np.float32) / 32768.0
    return out, int(wave.frame_rate)


def prepare(
    data: bytes, preprocess: bool, *, sample_rate: int, mel_fn, device: torch.device, max_seconds: float
) -> PreparedVoice:
    """Decode, preprocess, normalise and resample one clip, and compute its mel spectrogram on the device."""
    samples, rate = decode(data, max_seconds)
    if preprocess:
        samples, rate = upstream_preprocess(samples, rate)
    seconds = samples.shape[0] / rate
    if seconds < MIN_REFERENCE_SECONDS:
        raise BadInputError(
            "bad_reference",
            f"the reference is {seconds:.2f} s of speech; at least {MIN_REFERENCE_SECONDS} s is needed", _FIELD)
    if seconds >= MAX_PLANNING_SECONDS:
        raise BadInputError(
            "bad_reference", f"the reference is {seconds:.1f} s; use a clip under {MAX_PLANNING_SECONDS:.0f} s "
            "(or leave preprocessing on, which clips it to 12 s)", _FIELD)
    if float(np.abs(samples).max()) < _SILENT_PEAK:
        raise BadInputError("bad_reference", "the reference audio is silent", _FIELD)
    audio = torch.from_numpy(np.ascontiguousarray(samples)).unsqueeze(0)
    rms = float(torch.sqrt(torch.mean(torch.square(audio))))
    if rms < TARGET_RMS:
        audio = audio * TARGET_RMS / rms
    if rate != sample_rate:
        audio = AF.resample(audio, rate, sample_rate)
    audio = audio.to(device)
    with torch.inference_mode():
        mel = mel_fn(audio)[0].transpose(0, 1).contiguous().float()
    return PreparedVoice(voice_digest(data, preprocess), audio, rms, mel, seconds)
