"""Project Gutenberg frames as Gutenberg has written them: each variant wraps the demo excerpt in the header and
footer lines of a real Gutenberg file of its era (the lines are quoted from those files), and the producer must give
back exactly the excerpt: no licence narrated, no chapter text lost."""

from __future__ import annotations

import pytest

from producer.corpus import segments
from tests.conftest import DEMO_CORPUS

LICENCE = ("Section 1. General Terms of Use and Redistributing Project Gutenberg-tm\r\nelectronic works\r\n\r\n"
           "1.A. By reading or using any part of this Project Gutenberg-tm\r\nelectronic work, you indicate that "
           "you have read, understand, agree to\r\nand accept all the terms of this license.\r\n")

VARIANTS = {
    # pg2000 as published today (release 1999, updated 2021)
    "current": ("\ufeffThe Project Gutenberg eBook of Don Quijote\r\n\r\nTitle: Don Quijote\r\n\r\n"
                "Author: Miguel de Cervantes Saavedra\r\n\r\n\r\n"
                "*** START OF THE PROJECT GUTENBERG EBOOK DON QUIJOTE ***\r\n\r\n\r\n",
                "\r\n\r\n*** END OF THE PROJECT GUTENBERG EBOOK DON QUIJOTE ***\r\n\r\n" + LICENCE),
    # 2000s-2010s files: "THIS", and the "End of the Project Gutenberg EBook of ..." line before the marker
    "this-and-end-of": ("The Project Gutenberg EBook of Don Quijote, by Miguel de Cervantes Saavedra\r\n\r\n"
                        "*** START OF THIS PROJECT GUTENBERG EBOOK DON QUIJOTE ***\r\n\r\n",
                        "\r\n\r\nEnd of the Project Gutenberg EBook of Don Quijote, by Miguel de Cervantes "
                        "Saavedra\r\n\r\n*** END OF THIS PROJECT GUTENBERG EBOOK DON QUIJOTE ***\r\n\r\n"
                        + LICENCE),
    # an END line indented as some files (and some re-wrapped copies) have it
    "indented-end": ("*** START OF THE PROJECT GUTENBERG EBOOK 2000 ***\r\n\r\n",
                     "\r\n\r\n                *** END OF THE PROJECT GUTENBERG EBOOK 2000 ***\r\n" + LICENCE),
    # indented start, and "End of Project Gutenberg's X, by Y" alone as the footer's first line
    "apostrophe": ("   ***START OF THE PROJECT GUTENBERG EBOOK DON QUIJOTE***\r\n\r\n",
                   "\r\n\r\nEnd of Project Gutenberg's Don Quijote, by Miguel de Cervantes Saavedra\r\n\r\n"
                   + LICENCE),
    # the 1990s "small print" header, and "End of The Project Gutenberg Etext of ..."
    "small-print": ("The Project Gutenberg Etext of Don Quijote\r\n\r\n**Welcome To The World of Free Plain "
                    "Vanilla Electronic Texts**\r\n\r\n*****These eBooks Were Prepared By Thousands of "
                    "Volunteers!*****\r\n\r\n"
                    "*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.02/11/02*END*\r\n\r\n\r\n",
                    "\r\n\r\nEnd of The Project Gutenberg Etext of Don Quijote\r\n\r\n" + LICENCE),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_frame_is_dropped_and_the_body_kept_exactly(tmp_path, variant):
    header, footer = VARIANTS[variant]
    excerpt = DEMO_CORPUS.read_bytes().decode("utf-8")
    path = tmp_path / f"{variant}.txt"
    path.write_bytes((header + excerpt + footer).encode("utf-8"))
    found = list(segments(path, 160, "es"))
    raw = "".join(s.raw for s in found)
    assert "Gutenberg" not in raw and "license" not in raw.lower()
    body = excerpt.replace("\r\n", "\n")
    assert raw.strip("\n") == body.strip("\n")  # the frame's blank lines may stay with their neighbours
    assert found[0].text.startswith("Capítulo primero")
