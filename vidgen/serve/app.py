"""The Gradio page and API of `vidgen serve` (gradio is wrapped here and imported nowhere else).

The page: prompt, negative prompt, seed (or a random one, shown once drawn), steps, guidance and
length; image and clip inputs only where the pipeline takes them (vidgen.serve.media); generate
and cancel; a progress bar per sampled part; the clip playing with its settings and a download
link; a gallery and a table of every clip this server made, to compare them.
The API: `/generate` (prompt, seed, negative_prompt, steps, guidance, frames) returns the MP4.
Both share one queue of one clip at a time; a refusal is a message, never a traceback.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no calls home
import gradio as gr  # noqa: E402  (the web extra; vidgen.commands.serve checks it is installed)

from ..errors import VidgenError
from .form import read_form
from .jobs import Clip, Studio
from .media import supported_inputs

logger = logging.getLogger(__name__)

CLIP_QUEUE = "clip"  # the concurrency group of everything that samples: one clip at a time
TABLE_COLUMNS = ["#", "prompt", "negative prompt", "seed", "steps", "guidance", "keyframes", "frames", "fps",
                 "size", "seconds", "file"]


def _summary(clip: Clip) -> str:
    """The settings beside a clip, in a line or two; every one of them is in its sidecar."""
    r = clip.record
    negative = f" | not: {r['negative_prompt']!r}" if r["negative_prompt"] else ""
    return (f"**{r['prompt']}**{negative}  \nseed {r['seed']} | {r['steps']} steps | guidance {r['guidance']:g} | "
            f"{r['keyframes']} keyframes -> {r['frames']} frames of {r['width']}x{r['height']} at {r['fps']:g} fps | "
            f"stages {', '.join(r['stages'])} | {r['scheduler']} | {r['autocast']} | {r['seconds']:.1f} s")


def _row(clip: Clip) -> list:
    r = clip.record
    return [clip.number, r["prompt"], r["negative_prompt"] or "", str(r["seed"]), r["steps"], r["guidance"],
            r["keyframes"], r["frames"], r["fps"], f"{r['width']}x{r['height']}", round(r["seconds"], 1),
            clip.path.name]


def _reporter(progress):
    """vidgen.pipeline's step callback as Gradio's progress bar: one bar per sampled part."""

    def report(part: str, step: int, steps: int) -> None:
        progress((step, steps), desc=f"{part}: step {step} of {steps}" if step else part, unit="steps")

    return report


def _theme():
    # System fonts: the default theme would have the browser fetch its fonts from the web.
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "Consolas", "monospace"])


def build_app(studio: Studio):
    """The page and API over `studio` (its pipeline already loaded), as a gr.Blocks with its queue."""
    d, kinds = studio.pipe.model.index.defaults, supported_inputs(studio.pipe)
    frames_out, height, width, fps = studio.pipe.output_size(d)

    def gallery() -> tuple[list, list]:
        return [(str(c.path), c.caption()) for c in reversed(studio.clips)], [_row(c) for c in studio.clips]

    def on_generate(prompt, negative, seed, random_seed, steps, guidance, frames, image, video, strength,
                    request: gr.Request, progress=gr.Progress()):
        try:
            clip_request = read_form(studio.pipe, prompt, negative, seed, random_seed, steps, guidance, frames,
                                     image, video, strength)
        except VidgenError as exc:
            studio.forget(request.session_hash)
            return (f"**Not made:** {exc}",) + (gr.skip(),) * 7
        try:
            clip = studio.make(clip_request, _reporter(progress), request.session_hash)
        except VidgenError as exc:  # Cancelled among them
            return (f"**Not made:** {exc}",) + (gr.skip(),) * 7
        except Exception as exc:  # a bug: its traceback goes to the server's log, the page says what happened
            logger.exception("vidgen serve: clip %r failed", clip_request.prompt)
            return (f"**Failed** ({type(exc).__name__}: {exc}); the server's log has the details and the page "
                    f"goes on working.",) + (gr.skip(),) * 7
        shown, table = gallery()
        return (f"Made clip #{clip.number} ({clip_request.summary()}) in {clip.record['seconds']:.1f} s.",
                str(clip.path), str(clip.path), _summary(clip), clip.record, str(clip_request.seed), shown, table)

    def api_generate(prompt, seed, negative_prompt, steps, guidance, frames, request: gr.Request,
                     progress=gr.Progress()):
        """One clip from a prompt; returns its MP4 (H.264). A seed left out is drawn at random
        (it is in the clip's metadata); steps, guidance and frames left out take the model's defaults."""
        try:
            clip_request = read_form(studio.pipe, prompt, negative_prompt, seed, seed is None, steps, guidance,
                                     frames)
            return str(studio.make(clip_request, _reporter(progress), request.session_hash).path)
        except VidgenError as exc:
            raise gr.Error(str(exc), print_exception=False) from None

    def on_queued(request: gr.Request):
        studio.expect(request.session_hash)

    def on_cancel(request: gr.Request):  # the clip's own event then says "Not made: cancelled ..."
        studio.cancel(request.session_hash)

    with gr.Blocks(title="vidgen", analytics_enabled=False) as demo:
        gr.Markdown(f"## vidgen\nModel `{Path(studio.model).name}`: {frames_out} frames of {width}x{height} at "
                    f"{fps:g} fps by default. One clip is made at a time; others wait in the queue, their place shown.")
        with gr.Row():
            with gr.Column():
                prompt = gr.Textbox(label="Prompt", placeholder="a red circle moving left", lines=2,
                                    elem_id="prompt")
                negative = gr.Textbox(label="Negative prompt (what the clip should not show)", elem_id="negative")
                with gr.Row():
                    seed = gr.Textbox(label="Seed (0 to 2^64-1)", value="0", elem_id="seed")
                    random_seed = gr.Checkbox(label="Random seed (the one drawn is shown)", value=True,
                                              elem_id="random-seed")
                with gr.Row():
                    steps = gr.Number(label="Steps", value=d.num_inference_steps, elem_id="steps")
                    guidance = gr.Number(label="Guidance (1: none)", value=d.guidance_scale, elem_id="guidance")
                    factor = frames_out // d.num_frames  # frame interpolation's
                    frames = gr.Number(label="Length (keyframes" + (f"; the clip has {factor}x as many)" if factor > 1
                                                                    else ")"), value=d.num_frames, elem_id="frames")
                image = (gr.Image(label="Image to animate (optional)", type="filepath", elem_id="image")
                         if "image" in kinds else gr.State(None))
                if "video" in kinds:
                    video = gr.Video(label="Clip to vary (optional)", elem_id="video-in")
                    strength = gr.Slider(0.05, 1.0, value=0.6, step=0.05, label="Strength (how much of the clip "
                                         "to redo)", elem_id="strength")
                else:
                    video, strength = gr.State(None), gr.State(None)
                with gr.Row():
                    generate = gr.Button("Generate", variant="primary", elem_id="generate")
                    cancel = gr.Button("Cancel", variant="stop", elem_id="cancel")
                status = gr.Markdown(elem_id="status")
            with gr.Column():
                clip = gr.Video(label="Clip", format="mp4", autoplay=True, loop=True, height=360, elem_id="clip")
                download = gr.File(label="Download (MP4, H.264)", elem_id="download")
                settings = gr.Markdown(elem_id="settings")
                with gr.Accordion("All settings (the clip's sidecar)", open=False):
                    record = gr.JSON(show_label=False, elem_id="record")
        shown = gr.Gallery(label="Clips made by this server (newest first)", columns=6, fit_columns=False,
                           height=250, object_fit="contain", preview=False, elem_id="gallery")
        table = gr.Dataframe(headers=TABLE_COLUMNS, label="Their settings", interactive=False, elem_id="table")

        # The API's own inputs: not on the page, named as the parameters of /generate.
        with gr.Column(visible=False):
            api_inputs = [gr.Textbox(label="prompt"), gr.Number(label="seed", value=None, precision=0),
                          gr.Textbox(label="negative_prompt", value=""),
                          gr.Number(label="steps", value=d.num_inference_steps, precision=0),
                          gr.Number(label="guidance", value=d.guidance_scale),
                          gr.Number(label="frames", value=d.num_frames, precision=0)]
            api_clip, api_trigger = gr.File(label="clip"), gr.Button()

        fields = [prompt, negative, seed, random_seed, steps, guidance, frames, image, video, strength]
        queued = generate.click(on_queued, None, None, api_visibility="private", queue=False)
        queued.then(on_generate, fields, [status, clip, download, settings, record, seed, shown, table],
                    show_progress_on=[clip], api_visibility="private", concurrency_id=CLIP_QUEUE, concurrency_limit=1)
        cancel.click(on_cancel, None, None, api_visibility="private", queue=False)
        api_trigger.click(api_generate, api_inputs, api_clip, api_name="generate", concurrency_id=CLIP_QUEUE,
                          concurrency_limit=1)
        demo.load(gallery, None, [shown, table], api_visibility="private", queue=False)
    demo.queue(default_concurrency_limit=1)
    return demo


def launch(demo, host: str, port: int, out_dir: str | os.PathLike):
    """Start serving `demo` on host:port without blocking; returns the page's address. Nothing is
    fetched from or shared to the web (no analytics, no share link, no server-side rendering)."""
    demo.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=True, quiet=True,
                show_error=False, ssr_mode=False, allowed_paths=[str(out_dir)], theme=_theme(), footer_links=["api"])
    return demo.local_url
