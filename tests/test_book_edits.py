"""A book as a script against real services: upstream's story.toml enqueued as it is (with our own clips), edits
that re-render only what they change (counted by storage writes), pauses in the assembled chapter. A real Redis, a
real worker with the tiny random model, local storage (every write is a new file: counted by inode)."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
import requests
import soundfile as sf

from tests.conftest import REF_TEXT, cli, own_queue, worker_env
from tests.services import WorkerProcess, free_port

pytestmark = pytest.mark.timeout(900)

UPSTREAM_STORY = Path(str(files("f5_tts").joinpath("infer/examples/multi/story.txt")))
TOWN = "I am the town mouse, and I live in the big city, where the larder is always full of good things to eat."
COUNTRY = "I am the country mouse, and I live in the quiet fields, where I eat my simple dinner of roots and corn."


def _espeak(path: Path, text: str, voice: str = "en") -> Path:
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True, capture_output=True)
    return path


@pytest.fixture(scope="module")
def book_env(redis_server, prepared_random_weights, tmp_path_factory, ref_wav_path, service_dir):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng (apt-get install espeak-ng) makes the other voices' clips")
    work = tmp_path_factory.mktemp("book-edits")
    port = free_port()
    env = worker_env(redis_server.url, f"file://{work / 'store'}", prepared_random_weights,
                     F5_QUEUE=own_queue("edits"), F5_METRICS_PORT=str(port))
    assert cli(env, "voice", "add", "narrador", str(ref_wav_path), "--text", REF_TEXT).returncode == 0
    sancho = _espeak(work / "sancho.wav", "Yo soy Sancho Panza, escudero de don Quijote.", "es")
    assert cli(env, "voice", "add", "sancho", str(sancho), "--text",
               "Yo soy Sancho Panza, escudero de don Quijote.").returncode == 0
    worker = WorkerProcess({k: v for k, v in env.items()}, service_dir / "logs", concurrency=8).start()
    yield env, work, port
    worker.stop()


def _segment_files(store: Path, book: str) -> dict[str, int]:
    """Every segment WAV of a book (takes, not chapters), by key, with its inode: a write makes a new file."""
    root = store / "books" / book
    return {p.relative_to(store).as_posix(): p.stat().st_ino for p in root.glob("[0-9]*/*.wav")}


def _written(before: dict[str, int], after: dict[str, int]) -> set[str]:
    return {key for key, inode in after.items() if before.get(key) != inode}


def _manifest(folder: Path, book: str) -> list[dict]:
    return [json.loads(line) for line in (folder / f"{book}.jsonl").read_text().splitlines()]


def _enqueue(env, *args: str) -> str:
    done = cli(env, "enqueue", *args, "--nfe-step", "2", "--wait", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def test_upstreams_story_toml_is_enqueued_as_it_is_and_passes_mix_voices(book_env, tmp_path):
    env, _, port = book_env
    story = tmp_path / "story"
    story.mkdir()
    shutil.copy(UPSTREAM_STORY, story / "story.txt")
    # clips about as long as the main one (5.3 s): rows of one length bucket, whatever their voice, share passes
    _espeak(story / "town.wav", TOWN)
    _espeak(story / "country.wav", COUNTRY, "en-us")
    shutil.copy(Path(str(files("f5_tts").joinpath("infer/examples/basic/basic_ref_en.wav"))), story / "main.wav")
    # upstream's story.toml, with our own clips and their transcripts (its empty ref_text asks for an ASR)
    (story / "story.toml").write_text(f'''# F5TTS_v1_Base | E2TTS_Base
model = "F5TTS_v1_Base"
ref_audio = "main.wav"
ref_text = "{REF_TEXT}"
gen_text = ""
gen_file = "story.txt"
remove_silence = true
output_dir = "tests"
output_file = "infer_cli_story.wav"

[voices.town]
ref_audio = "town.wav"
ref_text = "{TOWN}"
speed = 0.8  # will ignore global speed

[voices.country]
ref_audio = "country.wav"
ref_text = "{COUNTRY}"
''')
    manifests = tmp_path / "m"
    _enqueue(env, str(story / "story.toml"), "--book", "story", "--lang", "en", "--batch-size", "8",
             "--manifest-dir", str(manifests))
    entries = _manifest(manifests, "story")
    text = UPSTREAM_STORY.read_text()
    runs, voice, position = [], "main", 0  # what story.txt says each stretch is spoken by
    for match in re.finditer(r"\[(\w+)\]", text):
        runs.append((voice, text[position : match.start()]))
        voice, position = match.group(1), match.end()
    runs.append((voice, text[position:]))
    for entry in entries:
        owners = {v for v, stretch in runs if entry["normalized"] in " ".join(stretch.split())}
        assert entry["voice"] in owners, (entry["normalized"], entry["voice"], owners)
    assert {e["voice"] for e in entries} == {"main", "town", "country"}
    metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    one_voice = float(re.search(r'f5_pass_voices_bucket\{le="1.0"\} (\S+)', metrics).group(1))
    passes = float(re.search(r"f5_pass_voices_count (\S+)", metrics).group(1))
    assert passes > one_voice, "no pass held rows of two voices"


BOOK = """Capítulo primero.

Había una vez un hidalgo que soñaba con Dulcinea cada noche.

—¿Quién es Dulcinea? —preguntó Sancho—. No la conozco.

El hidalgo no contestó y siguió su camino por la llanura.

Al caer la tarde llegaron a una venta muy pobre. [pause 2s] Allí cenaron.
"""


def test_edits_re_render_only_what_they_change_and_chapters_hold_only_current_takes(book_env, tmp_path):
    env, work, _ = book_env
    store, manifests = work / "store", tmp_path / "m"
    corpus, lexicon = tmp_path / "book.txt", tmp_path / "lexicon.txt"
    corpus.write_text(BOOK, encoding="utf-8")
    lexicon.write_text("Dulcinea = Dulcinea del Toboso\n", encoding="utf-8")
    args = (str(corpus), "--book", "edits", "--voice", "narrador", "--dialogue-voice", "sancho", "--lexicon",
            str(lexicon), "--lang", "es", "--batch-size", "4", "--manifest-dir", str(manifests))
    _enqueue(env, *args)
    first = _manifest(manifests, "edits")
    assert not any("[pause" in e["normalized"] for e in first)
    before = _segment_files(store, "edits")
    assert set(before) == {e["key"] for e in first}

    # 1. one lexicon entry changed: exactly the segments containing that word
    lexicon.write_text("Dulcinea = la señora Dulcinea\n", encoding="utf-8")
    report = _enqueue(env, *args)
    second = _manifest(manifests, "edits")
    after = _segment_files(store, "edits")
    with_word = {e["key"] for e in second if "Dulcinea" in e["text"]}
    assert _written(before, after) == with_word and len(with_word) == 2
    assert f"{len(with_word)} changed, {len(second) - len(with_word)} unchanged, 2 removed" in report
    _assert_chapter_holds(env, store, manifests, "edits")

    # 2. one paragraph edited: only its segments
    corpus.write_text(BOOK.replace("siguió su camino por la llanura", "siguió su camino hacia el sur"),
                      encoding="utf-8")
    before = after
    _enqueue(env, *args)
    third = _manifest(manifests, "edits")
    after = _segment_files(store, "edits")
    assert _written(before, after) == {e["key"] for e in third if "hacia el sur" in e["text"]}
    _assert_chapter_holds(env, store, manifests, "edits")

    # 3. the narrator's clip replaced with different audio and the same transcript: every segment in that voice
    other = _espeak(tmp_path / "otro.wav", "Some call me nature, others call me mother nature.")
    assert cli(env, "voice", "add", "narrador", str(other), "--text", REF_TEXT).returncode == 0
    before = after
    _enqueue(env, *args)
    fourth = _manifest(manifests, "edits")
    after = _segment_files(store, "edits")
    narrated = {e["key"] for e in fourth if e["voice"] == "narrador"}
    assert _written(before, after) == narrated and narrated != {e["key"] for e in fourth}
    _assert_chapter_holds(env, store, manifests, "edits")


def _assert_chapter_holds(env, store: Path, manifests: Path, book: str) -> None:
    """The assembled chapter is made of the current version's takes: it lasts exactly their audio plus the pauses,
    and the silence a [pause 2s] asked for is there, 2 s to within one frame."""
    done = cli(env, "assemble", book, "--format", "wav", "--manifest-dir", str(manifests))
    assert done.returncode == 0, done.stderr[-2000:]
    entries = _manifest(manifests, book)
    audio, rate = sf.read(store / "books" / book / "chapters" / "001.wav", dtype="float32")
    segments_s = sum(sf.info(store / e["key"]).frames for e in entries) / rate
    pauses_s = sum(e["offset_s"] - (p["offset_s"] + p["duration_s"]) for p, e in itertools.pairwise(entries))
    assert abs(len(audio) / rate - (segments_s + pauses_s)) < 1e-3
    paused = next(i for i, e in enumerate(entries) if e["pause_after_s"] == 2.0)
    gap_start = entries[paused]["offset_s"] + entries[paused]["duration_s"]
    gap_s = entries[paused + 1]["offset_s"] - gap_start
    assert abs(gap_s - 2.0) <= 256 / rate
    silence = audio[round(gap_start * rate) : round((gap_start + gap_s) * rate)]
    assert silence.size and np.abs(silence).max() == 0.0
