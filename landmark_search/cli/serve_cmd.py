"""`landmark serve`: the local web app over an index (browse, search by photo, review and name, duplicates, map)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Optional

import typer

from ..errors import LandmarkError
from . import DeviceOpt, IndexOpt, MaxPixelsOpt, PrecisionOpt, TrustOpt, _err, app, handle_errors


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@app.command("serve")
@handle_errors
def serve_cmd(index: str = IndexOpt,
              host: str = typer.Option("127.0.0.1", help="Address to listen on. Anything but this machine "
                                       "(127.0.0.1, localhost) lets other computers see your photos."),
              port: int = typer.Option(8765, help="Port to listen on."),
              open_browser: bool = typer.Option(False, "--open", help="Open the library in the default browser."),
              xmp: bool = typer.Option(False, "--xmp", help="Naming photos on the review page also writes XMP "
                                       "keywords (as `landmark tag --xmp`)."),
              train_dir: Optional[Path] = typer.Option(None, "--train-dir", help="Where the review page links named "
                                                      "photos for training (TRAIN_DIR/train/NAME/); default "
                                                      "INDEX/training. Then `landmark train --data TRAIN_DIR`."),
              min_size: int = typer.Option(5, help="Fewest photos in a review group (as `landmark group "
                                           "--min-size`)."),
              any_subject: bool = typer.Option(False, "--any-subject", help="Built-in model: review groups of any "
                                               "subject, not only of buildings and landforms (as `landmark group "
                                               "--any-subject`)."),
              verify: bool = typer.Option(True, "--verify/--no-verify", help="Review groups: link neighbour photos "
                                          "whose keypoints match (as `landmark group --verify`, the default)."),
              review_dir: Optional[Path] = typer.Option(None, "--review-dir", help="Where the Duplicates page "
                                                        "moves the copies you do not keep (outside the photos; "
                                                        "default INDEX/duplicates-review)."),
              device: str = DeviceOpt, precision: str = PrecisionOpt, max_pixels: Optional[int] = MaxPixelsOpt,
              trust_export: bool = TrustOpt) -> None:
    """Browse, search and review a photo library in your browser (a local web app; JSON API under /api/)."""
    from ..config import DEFAULT_MAX_PIXELS
    from ..curation.grouping import GroupOptions
    from ..search import index_dir, recorded_model

    if not 0 < port < 65536:
        raise LandmarkError(f"--port {port}: use 1-65535")
    if min_size < 2:
        raise LandmarkError(f"--min-size {min_size}: a group needs at least 2 photos")
    recorded_model(index_dir(index))  # no index: one line naming the fix, before the web stack loads
    local = _is_loopback(host)
    if not local:
        _err(f"warning: --host {host} serves your photos to other computers on the network, with no login; "
             "use 127.0.0.1 unless you mean it")

    import uvicorn

    from ..web.app import LOCAL_HOSTS, create_app
    from ..web.library import Library, ServeOptions
    from ..web.listen import bind

    sock = bind(host, port)  # a busy port: one line, before anything says "serving"
    library = Library.open(index, ServeOptions(max_pixels=max_pixels or DEFAULT_MAX_PIXELS,
                                               trust_export=trust_export, device=device, precision=precision,
                                               xmp=xmp, train_dir=train_dir,
                                               group=GroupOptions(min_size=min_size, any_subject=any_subject,
                                                                 verify=verify),
                                               review_dir=review_dir))
    library.warm_up()
    web = create_app(library, allowed_hosts=(*LOCAL_HOSTS, host) if local else None)
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/"
    typer.echo(f"landmark-search: {library.directory} at {url}  (Ctrl-C stops)", err=True)
    if open_browser:
        import threading
        import webbrowser

        threading.Timer(1.0, webbrowser.open, args=(url,)).start()
    try:
        uvicorn.Server(uvicorn.Config(web, log_level="warning", access_log=False)).run(sockets=[sock])
    finally:
        library.close()
