"""``f5-batch serve``: the HTTP gateway (torch-free; it needs the ``gateway`` extra: FastAPI and uvicorn)."""

from __future__ import annotations

import click


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 in containers).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
def serve(host: str, port: int) -> None:
    """Serve the seed's /tts call and the jobs API over HTTP, in front of the queue."""
    try:
        from gateway.security import GatewayClosed
        from gateway.server import serve as run
    except ImportError as exc:
        raise click.ClickException(f"the gateway needs its extra: pip install 'f5-batch[gateway]' ({exc})") from None
    try:
        run(host, port)
    except GatewayClosed as exc:
        raise click.ClickException(str(exc)) from None
