"""The arrow critic (vidgen.models.critic) and classifier guidance in the sampler: the critic is odd in
time, saves and loads, learns which way a captioned motion runs, and its gradient steers samples."""

import json

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from vidgen.diffusion.losses import add_noise
from vidgen.diffusion.sampler import classifier_guidance, sample
from vidgen.errors import VidgenError
from vidgen.models.critic import ArrowCritic, CriticConfig, arrow_loss, swap_loss, swaps
from vidgen.training.stages import NOISE_SCHEDULE
from vidgen.weights import CheckpointError

TINY = CriticConfig(latent_channels=4, text_dim=16, widths=(8, 16), embed_dim=16)
WORDS = torch.randn(4, 16, generator=torch.Generator().manual_seed(7))  # left, right, up, down
STEPS = {0: (0, -1), 1: (0, 1), 2: (-1, 0), 3: (1, 0)}  # word -> (row, column) step per frame


def critic(seed: int = 0) -> ArrowCritic:
    torch.manual_seed(seed)
    return ArrowCritic(TINY)


def moving_blobs(words: torch.Tensor, generator: torch.Generator, frames: int = 8, size: int = 12) -> torch.Tensor:
    """(b 4 f h w) latents: a bright square starting at a random place, one pixel a frame the way its word says."""
    clips = torch.zeros(len(words), 4, frames, size, size)
    for i, word in enumerate(words.tolist()):
        dy, dx = STEPS[word]
        y, x = (int(v) for v in torch.randint(2, size - 4, (2,), generator=generator))
        y, x = (y if dy == 0 else (0 if dy > 0 else size - 3)), (x if dx == 0 else (0 if dx > 0 else size - 3))
        for f in range(frames):
            yy, xx = min(max(y + dy * f, 0), size - 3), min(max(x + dx * f, 0), size - 3)
            clips[i, :, f, yy:yy + 3, xx:xx + 3] = 2.0
    return clips


def tokens_of(words: torch.Tensor) -> torch.Tensor:
    """(b 3 16): a caption of two shared tokens and its motion word."""
    shared = torch.ones(len(words), 2, 16)
    return torch.cat([shared, WORDS[words][:, None]], dim=1)


@pytest.fixture(scope="module")
def trained_critic() -> ArrowCritic:
    model, g = critic(), torch.Generator().manual_seed(0)
    schedule = DDPMScheduler(**NOISE_SCHEDULE)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        words = torch.randint(0, 4, (16,), generator=g)
        x_t, _, t = add_noise(schedule, moving_blobs(words, g), g, timesteps=torch.randint(0, 300, (16,), generator=g))
        loss = arrow_loss(model(x_t, t, tokens_of(words)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def others_of(words: torch.Tensor) -> torch.Tensor:
    """(b 3 3 16): each caption with its motion word swapped for each of the other three."""
    return torch.stack([tokens_of((words + shift) % 4) for shift in (1, 2, 3)], dim=1)


def train(model: ArrowCritic, swap_weight: float, steps: int = 150) -> ArrowCritic:
    g = torch.Generator().manual_seed(0)
    schedule = DDPMScheduler(**NOISE_SCHEDULE)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        words = torch.randint(0, 4, (16,), generator=g)
        x_t, _, t = add_noise(schedule, moving_blobs(words, g), g, timesteps=torch.randint(0, 300, (16,), generator=g))
        d, scores = model(x_t, t, tokens_of(words), others_of(words))
        loss = arrow_loss(d) + swap_weight * swap_loss(scores, torch.ones_like(scores, dtype=torch.bool))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def test_the_logit_is_odd_in_time():
    model, x = critic(), torch.randn(3, 4, 6, 8, 8)
    t, tokens = torch.tensor([10, 500, 990]), torch.randn(3, 5, 16)
    with torch.no_grad():
        forward, backward = model(x, t, tokens), model(x.flip(2), t, tokens)
        still = model(x[:, :, :1].expand(-1, -1, 6, -1, -1), t, tokens)  # the same frame six times
    assert torch.allclose(backward, -forward, atol=1e-5) and forward.abs().min() > 0
    assert torch.allclose(still, torch.zeros(3), atol=1e-5)  # a clip without an order has no arrow


def test_saves_as_safetensors_and_loads_the_same(tmp_path):
    model, x = critic(), torch.randn(2, 4, 6, 8, 8)
    t, tokens = torch.tensor([100]), torch.randn(2, 5, 16)
    model.save_pretrained(tmp_path / "critic")
    assert sorted(p.name for p in (tmp_path / "critic").iterdir()) == ["critic.json", "critic.safetensors"]
    loaded = ArrowCritic.from_pretrained(tmp_path / "critic")
    assert loaded.config == TINY
    with torch.no_grad():
        assert torch.equal(loaded(x, t, tokens), model(x, t, tokens))


def test_loading_refuses_a_missing_file_and_an_unknown_key(tmp_path):
    with pytest.raises(CheckpointError, match="needs critic.json and critic.safetensors"):
        ArrowCritic.from_pretrained(tmp_path)
    critic().save_pretrained(tmp_path / "c")
    config = json.loads((tmp_path / "c" / "critic.json").read_text())
    (tmp_path / "c" / "critic.json").write_text(json.dumps({**config, "depth": 3}))
    with pytest.raises(VidgenError, match="bad config key 'depth'"):
        ArrowCritic.from_pretrained(tmp_path / "c")


def test_learns_which_way_each_word_moves(trained_critic):
    g = torch.Generator().manual_seed(1)
    words = torch.arange(4).repeat(16)
    clips = moving_blobs(words, g)
    swapped = words ^ 1  # left <-> right, up <-> down
    other_axis = (words + 2) % 4
    with torch.no_grad():
        t = torch.tensor([50])
        right = trained_critic(clips, t, tokens_of(words))
        opposite = trained_critic(clips, t, tokens_of(swapped))
        crossed = trained_critic(clips, t, tokens_of(other_axis))
    assert (right > 0).float().mean() > 0.9  # forward under its own word
    assert (opposite < 0).float().mean() > 0.9  # and backward under the opposite one
    assert right.mean() > crossed.abs().mean()  # the other axis' word says little about it


@pytest.mark.parametrize("kind", ["v_prediction", "sample"])
def test_guidance_shifts_every_prediction_type_to_the_same_step(kind):
    """eps - sqrt(1 - alpha_bar) g, written as v or x0, gives the scheduler the same update."""
    g = torch.Generator().manual_seed(0)
    x_t, eps, gradient = (torch.randn(2, 4, 3, 8, 8, generator=g) for _ in range(3))
    t = torch.tensor(601)

    def scheduler(prediction_type):
        s = DDIMScheduler(**NOISE_SCHEDULE, prediction_type=prediction_type, clip_sample=False, set_alpha_to_one=False)
        s.set_timesteps(5)
        return s

    a = scheduler("epsilon").alphas_cumprod[601]
    x0 = (x_t - (1 - a) ** 0.5 * eps) / a ** 0.5
    as_kind = {"v_prediction": a ** 0.5 * eps - (1 - a) ** 0.5 * x0, "sample": x0}[kind]
    expected = scheduler("epsilon").step(eps - (1 - a) ** 0.5 * gradient, t, x_t).prev_sample
    s = scheduler(kind)
    shifted = s.step(classifier_guidance(s, as_kind, gradient, t), t, x_t).prev_sample
    assert torch.allclose(shifted, expected, atol=1e-4)
    assert not torch.allclose(expected, scheduler("epsilon").step(eps, t, x_t).prev_sample, atol=1e-3)


def test_guided_samples_run_the_way_the_words_say(trained_critic):
    """Sampling from noise with a denoiser that knows nothing of motion: the critic's gradient
    alone makes the samples run forward under their words."""
    words = torch.arange(4).repeat(4)
    tokens = tokens_of(words)

    def guide(x, t):
        with torch.enable_grad():
            x = x.detach().requires_grad_()
            log_p = torch.nn.functional.logsigmoid(trained_critic(x, t.reshape(1), tokens)).sum()
            return 5.0 * torch.autograd.grad(log_p, x)[0]

    def run(guided):
        noise = torch.randn(16, 4, 8, 12, 12, generator=torch.Generator().manual_seed(3))
        scheduler = DDIMScheduler(**NOISE_SCHEDULE, clip_sample=False, set_alpha_to_one=False)
        samples = sample(lambda x, t, c: 0.5 * x, scheduler, noise, tokens, num_inference_steps=10,
                         guide=guide if guided else None)
        with torch.no_grad():
            return trained_critic(samples, torch.tensor([0]), tokens)

    plain, guided = run(False), run(True)
    assert guided.mean() > plain.mean() + 1.0
    assert (guided > 0).float().mean() > (plain > 0).float().mean()


def test_swaps_replace_one_word_of_a_group_at_a_time():
    groups = {"direction": ["left", "right", "up", "down"]}
    assert swaps("A red circle moving Left.", groups) == ["A red circle moving right.", "A red circle moving up.",
                                                          "A red circle moving down."]
    assert swaps("a red circle", groups) == []  # no word of the group: nothing to swap
    assert swaps("leftover up", {"d": ["left", "up"]}) == ["leftover left"]  # whole words only


def test_swap_loss_counts_only_real_swaps():
    scores = torch.tensor([[2.0, 0.0, 5.0], [1.0, 0.0, 9.0], [3.0, 3.0, 3.0]])
    valid = torch.tensor([[True, True, False], [True, True, True], [True, False, False]])
    expected = [torch.logsumexp(torch.tensor([2.0, 0.0]), 0) - 2.0, torch.logsumexp(torch.tensor([1.0, 0.0, 9.0]), 0) - 1.0]
    assert torch.isclose(swap_loss(scores, valid), torch.stack(expected).mean())
    assert swap_loss(scores, valid[:, :1].expand(-1, 3) & torch.tensor([True, False, False])) == 0  # no clip has one


def test_swapped_captions_make_the_critic_sure_of_its_word():
    """The arrow alone, in this easy world, already ranks the clip's own word first but leaves a
    fifth of the probability on the others; trained on swapped captions as well, the critic puts
    nearly all of it on the clip's own word among all four, the other axis' included."""
    def own_word(model):
        g = torch.Generator().manual_seed(1)
        words = torch.arange(4).repeat(16)
        with torch.no_grad():
            _, scores = model(moving_blobs(words, g), torch.tensor([0]), tokens_of(words), others_of(words))
        return (scores.argmax(dim=1) == 0).float().mean().item(), scores.softmax(dim=1)[:, 0].mean().item()

    (_, arrow_only), (picked, with_swaps) = own_word(train(critic(), 0.0)), own_word(train(critic(), 1.0))
    assert picked == 1.0 and with_swaps > 0.99
    assert with_swaps > arrow_only + 0.1
