"""The early clean clips held to the motion words (vidgen.diffusion.motion_projection), the frame
translation it and the continuation of clips are built on, and the pipeline running it."""

import pytest
import torch

from vidgen.diffusion.flow_noise import estimate_shifts, shifted, translated
from vidgen.diffusion.motion_projection import onto_translation
from vidgen.errors import VidgenError
from vidgen.models.vae import latent_factor
from vidgen.pipeline import VideoPipeline


def blob(rows=slice(6, 9), cols=slice(4, 7), size=16) -> torch.Tensor:
    """(1 2 16 16) one frame: a square on a flat ground of 0.3."""
    frame = torch.full((1, 2, size, size), 0.3)
    frame[:, :, rows, cols] = torch.tensor([1.0, -1.0]).view(1, 2, 1, 1)
    return frame


def test_a_frame_is_moved_by_each_displacement_and_the_ground_fills_in_behind():
    shifts = torch.tensor([[[0.0, 0.0], [1.0, 2.0], [-2.0, 3.0]]])  # (b n 2) rows, columns
    moved = translated(blob(), shifts)  # (1 2 3 16 16)
    torch.testing.assert_close(moved[:, :, 0], blob(), atol=1e-5, rtol=0)
    torch.testing.assert_close(moved[:, :, 1], blob(slice(7, 10), slice(6, 9)), atol=1e-5, rtol=0)
    torch.testing.assert_close(moved[:, :, 2], blob(slice(4, 7), slice(7, 10)), atol=1e-5, rtol=0)
    assert torch.equal(estimate_shifts(moved)[0], shifts[0])
    half = translated(blob(), torch.tensor([[[0.0, 0.5]]]))[0, 0, 0, 7]  # half a cell: the edge shared
    assert half[4] == pytest.approx(0.65) and half[7] == pytest.approx(0.65) and half[5] == pytest.approx(1.0)


def test_each_frame_moves_by_its_own_displacement():
    frames = torch.stack([blob(), blob(slice(2, 5), slice(10, 13))], dim=2)  # (1 2 2 16 16)
    back = shifted(frames, torch.tensor([[[0.0, 0.0], [4.0, -6.0]]]))
    torch.testing.assert_close(back[:, :, 1], blob(), atol=1e-5, rtol=0)
    torch.testing.assert_close(back[:, :, 0], frames[:, :, 0], atol=1e-5, rtol=0)


def test_a_clip_that_moves_as_asked_is_its_own_projection_and_others_are_pulled_onto_it():
    shifts = torch.stack([torch.zeros(4), torch.arange(4.0)], dim=1)[None]  # (1 4 2) a cell a frame right
    moving = translated(blob(), shifts)  # (1 2 4 16 16)
    torch.testing.assert_close(onto_translation(moving, shifts), moving, atol=1e-5, rtol=0)
    still = blob()[:, :, None].expand(-1, -1, 4, -1, -1)  # the square not moving at all
    projected = onto_translation(still, shifts)
    assert torch.equal(estimate_shifts(projected)[0], shifts[0])  # now it moves a cell a frame
    torch.testing.assert_close(projected[:, :, 1:], shifted(projected[:, :, :1].expand(-1, -1, 3, -1, -1),
                                                             shifts[:, 1:]), atol=1e-5, rtol=0)  # one picture
    halfway = onto_translation(still, shifts, weight=0.5)
    torch.testing.assert_close(halfway, (still + projected) / 2)
    both = onto_translation(torch.cat([still, still]), torch.cat([shifts, torch.zeros_like(shifts)]))
    assert torch.equal(both[1:], still)  # no motion word: left as it was


def test_the_base_stage_holds_its_first_clean_clips_to_the_words(sd_image_model, monkeypatch):
    import vidgen.pipeline as pipeline_module

    pipe = VideoPipeline.from_image_model(sd_image_model)
    pipe.model.index.frame_noise_correlation, pipe.model.index.motion_words = 0.5, {"right": [0.0, 0.25]}
    seen, plain = [], pipeline_module.onto_translation

    def recording(x0, shifts):
        seen.append(shifts.clone())
        return plain(x0, shifts)

    monkeypatch.setattr(pipeline_module, "onto_translation", recording)
    small = dict(num_frames=4, height=16, width=16, fps=4.0, num_inference_steps=4, stages=["base"], progress=False,
                 seed=0, motion_noise=True)
    held = pipe(["a red circle moving right", "a red circle"], motion_projection=2, **small)
    assert len(seen) == 2 and held.settings.motion_projection == 2  # the first 2 of 4 steps
    side = 16 // latent_factor(pipe.model.vae)  # latent cells across
    assert seen[0][0, :, 1].tolist() == pytest.approx([0.25 * k / 4.0 * side for k in range(4)])  # as the noise
    assert not seen[0][1].any()
    seen.clear()
    free = pipe(["a red circle moving right", "a red circle"], **small)
    assert not seen and not torch.equal(torch.as_tensor(held.frames[0]), torch.as_tensor(free.frames[0]))
    assert torch.equal(torch.as_tensor(held.frames[1]), torch.as_tensor(free.frames[1]))  # no motion word
    still = pipe("a red circle moving right", **{**small, "motion_noise": False}, motion_projection=2)
    assert not seen and still.settings.motion_projection == 2  # still noise (--no-motion-noise): nothing held
    with pytest.raises(VidgenError, match="motion_projection must be 0"):
        pipe("a red circle moving right", **small, motion_projection=-1)
