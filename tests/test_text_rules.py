"""Upstream's text rules are kept exactly: our pure-Python versions against upstream's own functions on real text."""

from __future__ import annotations

import pytest

from worker.speech import chunk_text, max_chars_for_reference, model_reference_text, reference_text


@pytest.fixture(scope="module")
def paragraphs(quijote_path):
    text = quijote_path.read_text(encoding="utf-8-sig").replace("\r\n", "\n")
    found = [" ".join(p.split()) for p in text.split("\n\n") if len(p) > 40]
    return found[40:640] if len(found) > 200 else found  # past the novel's front matter; the excerpt has none


@pytest.mark.parametrize("max_chars", [40, 135, 260])
def test_chunking_equals_upstream_on_the_quijote(paragraphs, max_chars):
    from f5_tts.infer.utils_infer import chunk_text as upstream_chunk_text

    for paragraph in paragraphs:
        assert chunk_text(paragraph, max_chars) == upstream_chunk_text(paragraph, max_chars)


def test_reference_text_endings():
    assert reference_text("Hola") == "Hola. "
    assert reference_text("Hola.") == "Hola. "
    assert reference_text("Hola. ") == "Hola. "
    assert reference_text("你好。") == "你好。"
    assert model_reference_text("Hola") == "Hola.  "  # upstream appends a space after a one-byte last character
    assert model_reference_text("你好。") == "你好。"


def test_max_chars_rule():
    # 51 bytes after the '. ' rule, 5 s of reference: 51 / 5 * (22 - 5) = 173.4
    assert max_chars_for_reference("Some call me nature, others call me mother nature", 5.0) == 173
    assert max_chars_for_reference("Some call me nature, others call me mother nature", 5.0, speed=0.5) == 86
