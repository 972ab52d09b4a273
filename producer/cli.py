"""The ``f5-batch`` command line. Each command lives in its own module; this one only assembles the group."""

from __future__ import annotations

import click

from producer import logs
from producer.cmd_assemble import assemble
from producer.cmd_enqueue import enqueue
from producer.cmd_resume import resume
from producer.cmd_review import accept_command, check, rerender_command, review
from producer.cmd_serve import serve
from producer.cmd_status import status, voice
from producer.synth import synth


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="-v for progress details, -vv for debug logs.")
def main(verbose: int) -> None:
    """Batch speech synthesis with F5-TTS: local synthesis, books to jobs, status, resume, assembly, HTTP gateway."""
    logs.configure(verbose)


for command in (synth, enqueue, resume, status, review, check, accept_command, rerender_command, voice, assemble,
                serve):
    main.add_command(command)
