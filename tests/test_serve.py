"""`vidgen serve` without a browser: the page's checks are the command line's, clips are written
as `vidgen generate` writes them, one at a time, a running clip can be cancelled, and the command
refuses what it cannot serve before loading the model (docs/serve.md)."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time

import av
import pytest
from launch_helpers import free_port
from serve_helpers import fast_model

from vidgen import VideoPipeline
from vidgen.cli import main
from vidgen.errors import VidgenError
from vidgen.request import MAX_PROMPT_CHARS
from vidgen.serve.form import read_form
from vidgen.serve.jobs import Cancelled, Studio
from vidgen.serve.media import check_image, read_media, supported_inputs


@pytest.fixture(scope="module")
def model(sd_image_model, tmp_path_factory):
    return fast_model(sd_image_model, tmp_path_factory.mktemp("serve") / "fast")


@pytest.fixture(scope="module")
def pipe(model):
    return VideoPipeline.from_pretrained(model)


def cli_error(capsys, *argv) -> str:
    assert main(list(argv)) == 2
    return capsys.readouterr().err.strip()


# The same value refused by the page's field and by the command line's flag, in the same words.
@pytest.mark.parametrize("field, value, flag", [
    ("seed", "-1", "--seed"), ("seed", str(2**64), "--seed"), ("seed", "abc", "--seed"),
    ("steps", "0", "--steps"), ("steps", "1.5", "--steps"), ("guidance", "nan", "--guidance"),
    ("frames", "0", "--frames"),
])
def test_page_refuses_a_bad_number_as_the_command_line_does(pipe, model, tmp_path, capsys, field, value, flag):
    with pytest.raises(VidgenError) as refused:
        read_form(pipe, "a red circle", **{field: value})
    cli = cli_error(capsys, "generate", "a red circle", "--model", str(model), "-o", str(tmp_path / "c.mp4"), flag,
                    value)
    reason = str(refused.value).split(": ", 1)[1]  # "seed -1: must be at least 0, got -1"
    assert reason in cli and value in str(refused.value)


def test_page_refuses_prompts_and_settings_as_the_command_line_does(pipe, model, tmp_path, capsys):
    too_long = "a red circle " * (MAX_PROMPT_CHARS // 10)
    for prompt in ("", "   ", too_long):
        with pytest.raises(VidgenError) as refused:
            read_form(pipe, prompt)
        assert str(refused.value) in cli_error(capsys, "generate", prompt, "--model", str(model), "-o",
                                               str(tmp_path / "c.mp4"))
    with pytest.raises(VidgenError, match="negative prompt is .* characters long"):
        read_form(pipe, "a red circle", negative=too_long)
    # Past the temporal layers' position table (8); past the noise schedule (1000 timesteps, offset 1).
    for flag, field, value in (("--frames", "frames", 9), ("--steps", "steps", 1000)):
        with pytest.raises(VidgenError) as refused:
            read_form(pipe, "a red circle", **{field: value})
        assert str(refused.value) in cli_error(capsys, "generate", "a red circle", "--model", str(model), "-o",
                                               str(tmp_path / "c.mp4"), flag, str(value))


def test_form_draws_a_seed_only_where_asked_and_takes_the_models_defaults(pipe):
    given = read_form(pipe, "a red circle", seed="18446744073709551615", random_seed=False)
    assert given.seed == 2**64 - 1 and given.settings.num_inference_steps == 2 and given.negative is None
    drawn = {read_form(pipe, "a red circle", seed="7", random_seed=True).seed for _ in range(3)}
    assert len(drawn) == 3  # fresh each time, whatever the seed field says
    asked = read_form(pipe, "a red circle", negative="blue", seed=3.0, steps=3.0, guidance=1, frames=4)
    assert (asked.seed, asked.negative, asked.settings.num_inference_steps, asked.settings.guidance_scale,
            asked.settings.num_frames) == (3, "blue", 3, 1.0, 4)


def test_studio_writes_clips_with_sidecars_and_numbers_past_earlier_ones(pipe, model, tmp_path):
    (tmp_path / "clip-0007.mp4").write_bytes(b"")  # an earlier server's clip
    studio = Studio(pipe, tmp_path, model)
    seen = []
    clip = studio.make(read_form(pipe, "a red circle", seed=5), lambda *step: seen.append(step))
    assert clip.path == tmp_path / "clip-0008.mp4" and studio.clips == [clip]
    sidecar = json.loads((tmp_path / "clip-0008.mp4.json").read_text())
    assert sidecar["seed"] == 5 and sidecar["prompt"] == "a red circle" and sidecar["steps"] == 2
    assert sidecar["frames"] == clip.record["frames"] == 2 and clip.record["seconds"] > 0
    assert seen == [("starting", 0, 1), ("base stage", 1, 2), ("base stage", 2, 2)]
    with av.open(str(clip.path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert sum(1 for _ in container.decode(stream)) == 2
    # The same seed and settings give the same clip, as with `vidgen generate`.
    again = studio.make(read_form(pipe, "a red circle", seed=5))
    assert again.path.name == "clip-0009.mp4" and again.path.read_bytes() == clip.path.read_bytes()


def test_a_running_clip_is_cancelled_between_steps_and_the_next_one_runs(pipe, model, tmp_path):
    studio = Studio(pipe, tmp_path, model)
    assert studio.cancel("nobody") is False

    def cancel_at_first_step(part, step, steps):
        if step == 1:
            assert studio.cancel("me") is True

    with pytest.raises(Cancelled):
        studio.make(read_form(pipe, "a red circle", seed=1, steps=50), cancel_at_first_step, session="me")
    assert list(tmp_path.iterdir()) == [] and studio.clips == []
    assert studio.make(read_form(pipe, "a red circle", seed=1), session="me").path.exists()


def test_one_clip_at_a_time(pipe, model, tmp_path):
    class Counting:  # the pipeline, counting the calls inside it at once
        inside = most = 0

        def __call__(self, *args, **kwargs):
            self.inside += 1
            self.most = max(self.most, self.inside)
            try:
                time.sleep(0.1)  # long enough for the other thread to arrive
                return pipe(*args, **kwargs)
            finally:
                self.inside -= 1

        def __getattr__(self, name):
            return getattr(pipe, name)

    counting = Counting()
    studio = Studio(counting, tmp_path, model)
    threads = [threading.Thread(target=studio.make, args=(read_form(pipe, "a red circle", seed=seed),))
               for seed in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counting.most == 1 and sorted(c.record["seed"] for c in studio.clips) == [1, 2]
    assert sorted(p.name for p in tmp_path.glob("*.mp4")) == ["clip-0001.mp4", "clip-0002.mp4"]


def test_media_inputs_appear_only_where_the_pipeline_takes_them(pipe, tmp_path):
    # this vidgen's pipeline takes both where the base stage draws no anchor frame of its own
    assert supported_inputs(pipe) == (("image", "video") if pipe.model.image_unet is None else ())

    class TextOnlyPipeline(VideoPipeline):  # a pipeline whose call has no image / video parameters
        def __call__(self, prompt, **options):
            return super().__call__(prompt, **options)

    text_only = TextOnlyPipeline(pipe.model)
    assert supported_inputs(text_only) == ()
    with pytest.raises(VidgenError, match="takes no image input"):
        read_media(text_only, str(tmp_path / "x.png"), None, None)

    class ImagePipeline(VideoPipeline):
        def supports_input(self, kind):
            return kind == "image"

    image_pipe = ImagePipeline(pipe.model)
    assert supported_inputs(image_pipe) == ("image",)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(VidgenError, match="broken.png cannot be read as a picture"):
        check_image(str(broken))
    with pytest.raises(VidgenError, match="broken.png cannot be read"):
        read_form(image_pipe, "a red circle", image=str(broken))
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    assert read_form(image_pipe, "a red circle", image=str(tmp_path / "ok.png")).media == {
        "image": str(tmp_path / "ok.png")}

    class ClipPipeline(VideoPipeline):
        def __call__(self, prompt, video=None, strength=None, **options):
            return super().__call__(prompt, **options)

    clip_pipe = ClipPipeline(pipe.model)
    assert supported_inputs(clip_pipe) == ("video",)
    (tmp_path / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not a clip")
    with pytest.raises(VidgenError, match="clip.mp4"):  # the reader's own message names the file
        read_form(clip_pipe, "a red circle", video=str(tmp_path / "clip.mp4"), strength=0.5)
    with pytest.raises(VidgenError, match="strength 1.5: must be at most 1"):
        read_form(clip_pipe, "a red circle", video=str(tmp_path / "clip.mp4"), strength=1.5)


def test_pipeline_step_callback_names_each_part_and_its_steps(pipe):
    seen = []
    pipe("a red circle", seed=0, progress=False, num_inference_steps=3, callback=lambda *step: seen.append(step))
    assert seen == [("base stage", 1, 3), ("base stage", 2, 3), ("base stage", 3, 3)]


def test_serve_refuses_before_loading(model, tmp_path, capsys, monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        assert "is in use" in cli_error(capsys, "serve", "--model", str(model), "--port", port)
    assert "must be at most 65535" in cli_error(capsys, "serve", "--port", "70000")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    assert "holds files vidgen did not write" in cli_error(capsys, "serve", "--model", str(model), "--port",
                                                           str(free_port()), "--out", str(mine))
    assert "not a folder" in cli_error(capsys, "serve", "--model", str(tmp_path / "none"))
    monkeypatch.setitem(sys.modules, "gradio", None)  # as where the web extra is not installed
    err = cli_error(capsys, "serve", "--model", str(model))
    assert err.count("\n") == 0 and 'pip install -e ".[web]"' in err and err.startswith("vidgen serve: error:")


def test_a_clip_from_a_picture_and_one_from_a_clip_go_through_the_page(pipe, model, tmp_path):
    """The page's image and clip inputs reach the pipeline (vidgen.media): the picture's clip and the
    redrawn clip are written with what was done to the input in their sidecars."""
    import numpy as np
    from PIL import Image

    from vidgen.video_io import save_video

    picture = tmp_path / "picture.png"
    Image.fromarray(np.full((40, 48, 3), (200, 30, 30), np.uint8)).save(picture)  # cropped and scaled to fit
    clip_in = tmp_path / "in.mp4"
    save_video(np.full((4, 32, 32, 3), 90, np.uint8), clip_in, fps=8)
    studio = Studio(pipe, tmp_path / "out", model)
    from_picture = studio.make(read_form(pipe, "a red circle", seed=1, image=str(picture)))
    sidecar = json.loads(from_picture.path.with_name(from_picture.path.name + ".json").read_text())
    assert "picture.png" in sidecar["image"] and from_picture.path.stat().st_size > 0
    # as the command's sidecar says it: this model has no image base stage and no anchor
    assert sidecar["image_base_stage"] is False and sidecar["picture_as_anchor"] is False
    assert "image_base_stage" not in json.loads(studio.make(read_form(pipe, "a red circle", seed=1)).path.with_name(
        "clip-0002.mp4.json").read_text())
    redrawn = studio.make(read_form(pipe, "a blue circle", seed=1, video=str(clip_in), strength="0.5"))
    sidecar = json.loads(redrawn.path.with_name(redrawn.path.name + ".json").read_text())
    assert "in.mp4" in sidecar["video"] and sidecar["strength"] == 0.5
