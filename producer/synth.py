"""``f5-batch synth``: run the engine locally, without a broker, to audition a voice before enqueuing a book.

The engine (and torch) is imported inside the command, so the rest of the CLI stays usable without a GPU stack.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import click

from worker.contract import JobParams, derive_seed
from worker.engine.precision import PRECISION_CHOICES
from worker.engine.presets import PRESET_NAMES


def _lines(text_file: Path) -> list[str]:
    return [line.strip() for line in text_file.read_text(encoding="utf-8-sig").splitlines() if line.strip()]


@click.command("synth")
@click.argument("text", required=False)
@click.option("--text-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="One WAV per non-empty line, written into -o DIR as 0001.wav, 0002.wav, ...")
@click.option("--ref-audio", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--ref-text", required=True, help="Exact transcript of the reference clip.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="WAV file, or folder with --text-file.")
@click.option("--model", default="F5TTS_v1_Base", show_default=True,
              help=f"Preset ({', '.join(PRESET_NAMES)}) or an upstream YAML config.")
@click.option("--ckpt", help="Checkpoint (.safetensors/.pt), local path or hf:// id.")
@click.option("--vocab", help="vocab.txt, local path or hf:// id.")
@click.option("--vocoder", help="Vocos folder (config.yaml + pytorch_model.bin), or hf:// repo.")
@click.option("--nfe-step", default=16, show_default=True, type=int)
@click.option("--cfg-strength", default=2.0, show_default=True, type=float)
@click.option("--sway-sampling-coef", default=-1.0, show_default=True, type=float)
@click.option("--speed", default=1.0, show_default=True, type=float)
@click.option("--seed", type=int, help="Noise seed; default: derived from the text, voice and parameters.")
@click.option("--batch-size", type=click.IntRange(1, 1024), default=None,
              help="Items per pass (1: one at a time). Default: 16 on a GPU; one on a CPU, where rows of different "
                   "lengths padded side by side cost more than they share (bench/bench_cpu.py).")
@click.option("--precision", type=click.Choice(PRECISION_CHOICES), default="auto", show_default=True)
@click.option("--device", help="cuda, cuda:N or cpu (default: cuda when available).")
@click.option("--compile/--no-compile", "compile_", default=None, help="torch.compile (default: on for CUDA).")
@click.option("--no-ref-preprocess", is_flag=True, help="Use the reference clip exactly as given.")
def synth(text: str | None, text_file: Path | None, ref_audio: Path, ref_text: str, output: Path, model: str,
          ckpt: str | None, vocab: str | None, vocoder: str | None, nfe_step: int, cfg_strength: float,
          sway_sampling_coef: float, speed: float, seed: int | None, batch_size: int | None, precision: str,
          device: str | None, compile_: bool | None, no_ref_preprocess: bool) -> None:
    """Synthesise TEXT (or every line of --text-file) in the voice of --ref-audio, locally."""
    if (text is None) == (text_file is None):
        raise click.UsageError("give either TEXT or --text-file")
    texts = _lines(text_file) if text_file else [text or ""]
    try:
        params = JobParams(nfe_step=nfe_step, cfg_strength=cfg_strength, sway_sampling_coef=sway_sampling_coef,
                           speed=speed, seed=seed)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    from worker.audio import encode_wav
    from worker.engine.engine import Engine, SynthesisRequest, VoiceInput
    from worker.errors import BadInputError, EngineBuildError
    from worker.settings import EngineSettings

    # unless given, the engine takes 16 rows per pass on a GPU and its CPU figure (one) on a CPU
    settings = EngineSettings(model=model, ckpt_file=ckpt, vocab_file=vocab, vocoder_path=vocoder,
                              precision=precision, device=device, compile=compile_, warmup=False,
                              max_batch=batch_size or 16, cpu_rows_per_pass=batch_size or 1)
    try:
        engine = Engine.build(settings)
    except (EngineBuildError, BadInputError) as exc:
        raise click.ClickException(str(exc)) from None
    clip = ref_audio.read_bytes()
    voice = VoiceInput(clip, ref_text, preprocess=not no_ref_preprocess)
    requests = [SynthesisRequest(line, voice, params, seed if seed is not None else
                                 _derived_seed(line, clip, ref_text, params)) for line in texts]
    start = time.perf_counter()
    outputs = engine.synthesize(requests)
    wall = time.perf_counter() - start
    failed = [(i, out.error) for i, out in enumerate(outputs) if out.error is not None]
    targets = [output / f"{i + 1:04d}.wav" for i in range(len(texts))] if text_file else [output]
    if text_file:
        output.mkdir(parents=True, exist_ok=True)
    audio_s = 0.0
    for target, out in zip(targets, outputs, strict=True):
        if out.waveform is not None:
            target.write_bytes(encode_wav(out.waveform, out.sample_rate))
            audio_s += out.duration_s
    click.echo(f"audio {audio_s:.2f} s  wall {wall:.2f} s  RTF {wall / audio_s if audio_s else float('nan'):.4f}  "
               f"({len(texts) - len(failed)} file(s), {engine.model_name}, {engine.device}, {engine.precision})")
    for index, error in failed:
        click.echo(f"line {index + 1}: {error}", err=True)
    if failed:
        raise SystemExit(1)


def _derived_seed(text: str, clip: bytes, ref_text: str, params: JobParams) -> int:
    digest = hashlib.sha256(clip)
    digest.update(f"|{ref_text}|{text}|{params.model_dump_json()}".encode())
    return derive_seed(digest.hexdigest())
