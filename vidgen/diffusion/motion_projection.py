"""The base stage's early clean estimates held to the motion the prompt's words name.

At the highest noise levels a DDIM step mostly commits to the clean clip x0 the network predicts
there, and that is where a clip's layout and motion are decided. Motion Guidance (Geng & Owens
2024) steers that estimate with the gradient of an optical-flow loss; where the wanted motion is a
translation (the motion words of vidgen.diffusion.flow_noise, the same displacements the noise
moves by) the nearest clip that obeys it has a closed form, so no gradient is needed: every frame
moved back by its displacement and averaged gives one picture (the least-squares template), which
moved forward again is the clip of that picture travelling exactly as asked. The sampler's
`clean_edit` puts it in place of x0 at the first steps; the later steps draw the detail freely.
"""

from __future__ import annotations

import torch

from .flow_noise import shifted


def onto_translation(x0: torch.Tensor, shifts: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """(b c f h w) clean estimate, (b f 2) each frame's displacement from the first in latent cells
    -> (b c f h w): moved `weight` of the way to one picture travelling by `shifts`. Rows whose
    displacements are all zero (no motion word) are left as they were."""
    shifts = shifts.to(x0.device)
    template = shifted(x0, -shifts).mean(2, keepdim=True)  # (b c 1 h w): the frames aligned, averaged
    projection = shifted(template.expand_as(x0), shifts)  # (b c f h w)
    moving = (shifts.abs().amax((1, 2)) > 0).view(-1, 1, 1, 1, 1)
    return torch.where(moving, x0 + weight * (projection - x0), x0)
