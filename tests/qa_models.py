"""Real audio and real recogniser models for the QA tests and the QA benchmark, built offline.

- Speech: F5-TTS's own English reference clip (a person reading a known sentence) and its ``multi`` example clips, and
  any sentence spoken by Debian's ``espeak-ng``.
- Whisper: the Hugging Face hub cannot be reached from the test machines, so :func:`random_whisper` builds a Whisper
  with *random weights* at a chosen architecture (``test``: tiny and fast; ``tiny`` and ``base``: the real sizes),
  with a tokenizer made here with the ``tokenizers`` library carrying every special token Whisper and faster-whisper
  look up, and converts it with CTranslate2's own converter, exactly as a real checkpoint is converted. What loads
  and runs it afterwards is the production code path (``worker.qa.asr.faster_whisper``); only the weights are fake,
  so it transcribes gibberish.

Building needs torch and transformers (test-only dependencies); the worker's QA code needs neither.
"""

from __future__ import annotations

import itertools
import json
import shutil
import string
import subprocess
from importlib.resources import files
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf

REF_EN_TEXT = "Some call me nature, others call me mother nature."
TEXT_VOCAB = 50_257  # Whisper's text tokens: <|endoftext|> comes right after them
TIMESTAMPS = 1_501  # <|0.00|> ... <|30.00|>

# d_model, encoder/decoder layers, heads, FFN width: "tiny" and "base" are OpenAI's sizes (39 M and 74 M parameters).
ARCHITECTURES: dict[str, tuple[int, int, int, int]] = {
    "test": (64, 2, 4, 128),
    "tiny": (384, 4, 6, 1536),
    "base": (512, 6, 8, 2048),
}


def examples() -> Path:
    return Path(str(files("f5_tts").joinpath("infer/examples")))


def ref_en() -> Path:
    """F5-TTS's English reference clip; it says :data:`REF_EN_TEXT`."""
    return examples() / "basic" / "basic_ref_en.wav"


def multi_clips() -> list[Path]:
    """F5-TTS's ``multi`` example voices (read English, 7-10 s each)."""
    return sorted((examples() / "multi").glob("*.flac"))


def read_mono(path: Path) -> tuple[npt.NDArray[np.float32], int]:
    samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return np.ascontiguousarray(samples.mean(axis=1), dtype=np.float32), int(rate)


def espeak(text: str, folder: Path, voice: str = "en-us", speed: int = 150) -> tuple[npt.NDArray[np.float32], int]:
    """``text`` spoken by espeak-ng (22.05 kHz). Raises FileNotFoundError when espeak-ng is not installed."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise FileNotFoundError("espeak-ng is not installed (apt-get install espeak-ng)")
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"espeak-{abs(hash((text, voice, speed))):x}.wav"
    subprocess.run([exe, "-v", voice, "-s", str(speed), "-w", str(out), text], check=True, capture_output=True)
    return read_mono(out)


def _special_tokens() -> list[str]:
    """Whisper's special tokens, in Whisper's order: ids TEXT_VOCAB, TEXT_VOCAB + 1, ..."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    return ["<|endoftext|>", "<|startoftranscript|>", *(f"<|{code}|>" for code in LANGUAGES),
            "<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>",
            "<|notimestamps|>"]


def _text_vocab() -> dict[str, int]:
    """TEXT_VOCAB byte-level tokens: the 256 byte symbols, then letter strings (with and without the word-start
    marker "Ġ"), so that whatever a random model emits decodes to letters and words, and last an empty token: the
    CTranslate2 4.8.5 this was built against looks it up to tell a multilingual Whisper (without it, the model loads
    as English-only and faster-whisper turns every language into "en")."""
    from tokenizers import pre_tokenizers

    tokens = sorted(pre_tokenizers.ByteLevel.alphabet())
    seen = set(tokens)
    for length in itertools.count(2):
        for letters in itertools.product(string.ascii_lowercase, repeat=length):
            for token in ("Ġ" + "".join(letters), "".join(letters)):
                if token not in seen:
                    tokens.append(token)
                    seen.add(token)
                if len(tokens) == TEXT_VOCAB - 1:
                    return {token: i for i, token in enumerate([*tokens, ""])}
    raise AssertionError("unreachable")


def build_tokenizer() -> object:
    """A Whisper-shaped byte-level BPE tokenizer (``tokenizers.Tokenizer``) with Whisper's special tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    tokenizer = Tokenizer(models.BPE(vocab=_text_vocab(), merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in _special_tokens()])
    return tokenizer


def random_whisper(out: Path, architecture: str = "test", seed: int = 0) -> Path:
    """A CTranslate2 Whisper folder with random weights at ``architecture`` (see :data:`ARCHITECTURES`), multilingual
    (all of Whisper's language tokens), 80 mel bins. Returns ``out``; reuses it when already built."""
    if (out / "model.bin").is_file():
        return out
    import torch
    from ctranslate2.converters import TransformersConverter
    from transformers import GenerationConfig, PreTrainedTokenizerFast, WhisperConfig, WhisperForConditionalGeneration

    d_model, layers, heads, ffn = ARCHITECTURES[architecture]
    specials = _special_tokens()
    ids = {token: TEXT_VOCAB + i for i, token in enumerate(specials)}
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    source = out.parent / f"{out.name}-hf"
    shutil.rmtree(source, ignore_errors=True)
    source.mkdir(parents=True)

    tokenizer = build_tokenizer()
    tokenizer.save(str(source / "tokenizer.json"))  # type: ignore[attr-defined]
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                            unk_token="<|endoftext|>", pad_token="<|endoftext|>").save_pretrained(str(source))
    (source / "preprocessor_config.json").write_text(json.dumps({
        "feature_extractor_type": "WhisperFeatureExtractor", "feature_size": 80, "sampling_rate": 16000,
        "hop_length": 160, "chunk_length": 30, "n_fft": 400, "n_samples": 480000, "nb_max_frames": 3000,
        "padding_side": "right", "padding_value": 0.0, "return_attention_mask": False}))

    config = WhisperConfig(
        vocab_size=TEXT_VOCAB + len(specials) + TIMESTAMPS, num_mel_bins=80, d_model=d_model,
        encoder_layers=layers, decoder_layers=layers, encoder_attention_heads=heads, decoder_attention_heads=heads,
        encoder_ffn_dim=ffn, decoder_ffn_dim=ffn, max_source_positions=1500, max_target_positions=448,
        decoder_start_token_id=sot, bos_token_id=eot, eos_token_id=eot, pad_token_id=eot)
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot, bos_token_id=eot, eos_token_id=eot, pad_token_id=eot, suppress_tokens=[],
        begin_suppress_tokens=[eot], lang_to_id={t: ids[t] for t in specials[2:-6]},
        no_timestamps_token_id=ids["<|notimestamps|>"], max_length=448)
    model.save_pretrained(str(source))

    TransformersConverter(str(source), copy_files=["tokenizer.json", "preprocessor_config.json"]).convert(
        str(out), force=True)
    shutil.rmtree(source, ignore_errors=True)
    return out
