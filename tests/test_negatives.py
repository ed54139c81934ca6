import torch

from vidgen.training.negatives import CaptionNeighbours


def test_neighbours_are_the_corpus_captions_one_word_away():
    captions = ["a red circle moving left", "a red circle moving right", "a blue circle moving left",
                "a red circle moving left", "a large red circle moving left", "a blue square moving up", ""]
    neighbours = CaptionNeighbours(captions).neighbours
    assert neighbours["a red circle moving left"] == ["a blue circle moving left", "a red circle moving right"]
    assert neighbours["a red circle moving right"] == ["a red circle moving left"]
    assert neighbours["a large red circle moving left"] == []  # one word longer is not one word away
    assert neighbours["a blue square moving up"] == []  # two words away from every other caption
    assert "" not in neighbours


def test_draw_gives_a_neighbour_per_caption_reproducibly_and_none_where_there_is_none():
    index = CaptionNeighbours([f"a {c} circle moving {d}" for c in ("red", "blue", "green") for d in ("left", "up")])
    asked = ["a red circle moving left"] * 50 + ["", "a pink circle moving left"]
    drawn = index.draw(asked, torch.Generator().manual_seed(0))
    assert drawn == index.draw(asked, torch.Generator().manual_seed(0))
    assert set(drawn[:50]) == {"a blue circle moving left", "a green circle moving left", "a red circle moving up"}
    assert drawn[50:] == [None, None]  # the empty prompt, a caption the corpus lacks
    assert len(index) == 6
