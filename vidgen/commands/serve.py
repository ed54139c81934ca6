"""`vidgen serve`: a local web page (and API) for making clips with one model, loaded once.

Gradio is an optional extra (`pip install -e ".[web]"`); without it the command stops with one
line saying so. The port, the model folder and the output folder are checked before the model
loads. The page listens on 127.0.0.1 unless --host says otherwise; nothing is shared to the web.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import socket
import tempfile
import time
from pathlib import Path

from ..destinations import check_clips_folder
from ..errors import Terminated, VidgenError
from . import arguments as types
from .sampling import DEVICES, plan

port_number = types.integer(low=1, high=65535, what="port")


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "serve", help="Serve a local web page (and API) for making clips",
        description="Start a local web page for making clips with one model, loaded once: prompt, seed, steps, "
        "guidance, length, progress, the clip with its settings and a download link, and a gallery of the clips "
        "made. Also an API endpoint /generate for gradio_client. Needs the web extra: pip install -e \".[web]\".")
    parser.add_argument("--model", metavar="DIR", help="vidgen model folder (default: the embedded shapes model)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                        "only; 0.0.0.0 opens the page to your network)")
    parser.add_argument("--port", type=port_number, default=7860, help="port to listen on (default 7860)")
    parser.add_argument("--out", metavar="DIR", help="folder for the clips (new, empty, or holding only vidgen clips; "
                        "default: a new temporary folder)")
    parser.add_argument("--device", default="cpu", choices=DEVICES, help="where to run (default cpu)")
    parser.set_defaults(run=run)
    return parser


def _check_port(host: str, port: int) -> None:
    """Refuse a port that is taken, or a host this machine cannot listen on, before the model loads."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the web server binds
            probe.bind((host, port))
    except socket.gaierror:
        raise VidgenError(f"--host {host} is not an address or name this machine knows: try 127.0.0.1") from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise VidgenError(f"--port {port} on {host} is in use (another server?): give another --port") from None
        raise VidgenError(f"cannot listen on {host}:{port} ({exc.strerror}): try --host 127.0.0.1 or another "
                          f"--port") from None


def _model_plan(args: argparse.Namespace):
    """The model folder checked as `vidgen generate` checks it, with its own defaults."""
    unset = dict(frames=None, steps=None, guidance=None, stages=None, motion_guidance=None, arrow_check=None,
                 candidates=None, choose_by=None, choose_at_step=None, reconstruction_guidance=None, autocast=None,
                 motion_noise=None, guidance_from_step=None, set=[], scheduler="ddim")
    return plan(argparse.Namespace(model=args.model, device=args.device, **unset))


def run(args: argparse.Namespace) -> int:
    # 1. Everything that can be refused, before the model loads.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home
    try:
        import gradio  # noqa: F401  (the web extra)
    except ImportError:
        raise VidgenError("the web page needs gradio, which the core install leaves out: pip install -e \".[web]\"") \
            from None
    _check_port(args.host, args.port)
    request = _model_plan(args)
    if args.out is not None:
        check_clips_folder(args.out)
        out_dir = Path(args.out)
        out_dir.mkdir(parents=True, exist_ok=True)
    else:
        out_dir = Path(tempfile.mkdtemp(prefix="vidgen-serve-"))

    # 2. The model, once; then the page.
    import torch
    from transformers.utils import logging as transformers_logging

    from ..pipeline import VideoPipeline
    from ..serve.app import build_app, launch
    from ..serve.jobs import Studio

    transformers_logging.disable_progress_bar()
    print(f"vidgen serve: loading {request.model}", flush=True)
    pipe = VideoPipeline.from_pretrained(request.model, device=torch.device(args.device))
    demo = build_app(Studio(pipe, out_dir, request.model))
    url = launch(demo, args.host, args.port, out_dir)
    print(f"vidgen serve: {url} (clips go to {out_dir}; Ctrl-C stops)", flush=True)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        while demo.is_running:
            time.sleep(0.2)
    finally:  # Ctrl-C (130) or SIGTERM (143): the server stops, the clips stay
        demo.close()
    return 0


def _terminate(signum, frame):
    raise Terminated()
