"""``f5-batch synth``: the engine in-process, through the installed command, with the tiny random model on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import soundfile as sf

from tests.conftest import REF_TEXT


def _synth(args: list[str], cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("F5_")}, "F5_RANDOM_CACHE_DIR": str(cache),
           "HF_HUB_OFFLINE": "1"}
    return subprocess.run([str(Path(sys.executable).with_name("f5-batch")), "synth", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_synth_writes_one_wav_per_line(prepared_random_weights, ref_wav_path, tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("The first line is short.\nThe second line is a little longer than the first one.\n")
    done = _synth(["--text-file", str(lines), "--ref-audio", str(ref_wav_path), "--ref-text", REF_TEXT,
                   "-o", str(tmp_path / "out"), "--model", "tiny-random", "--device", "cpu", "--no-compile",
                   "--nfe-step", "2"], prepared_random_weights)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("0001.wav", "0002.wav"):
        info = sf.info(str(tmp_path / "out" / name))
        assert info.samplerate == 24000 and info.subtype == "PCM_16" and info.frames > 0
    assert "RTF" in done.stdout or "rtf" in done.stdout.lower()


def test_synth_refuses_a_batch_size_out_of_range(prepared_random_weights, ref_wav_path, tmp_path):
    done = _synth(["hello", "--ref-audio", str(ref_wav_path), "--ref-text", REF_TEXT, "-o", str(tmp_path / "x.wav"),
                   "--model", "tiny-random", "--device", "cpu", "--batch-size", "0"], prepared_random_weights)
    assert done.returncode == 2 and "--batch-size" in done.stderr
    assert not (tmp_path / "x.wav").exists()
