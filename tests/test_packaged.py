import pytest

from vidgen import packaged
from vidgen.errors import VidgenError


def test_packaged_minilm_is_found_and_verified():
    folder = packaged.minilm_folder()
    assert (folder / packaged.MINILM_WEIGHTS).is_file()
    assert packaged.resolve_text_encoder("minilm") == folder


def test_a_weight_file_with_another_hash_is_refused(monkeypatch):
    monkeypatch.setattr(packaged, "MINILM_SHA256", "0" * 64)
    with pytest.raises(VidgenError, match="not the pinned"):
        packaged.minilm_folder()


def test_unknown_text_encoder_name_is_explained(tmp_path):
    with pytest.raises(VidgenError, match="neither 'minilm' nor a folder"):
        packaged.resolve_text_encoder(str(tmp_path / "nope"))


def test_default_model_is_found_only_when_shipped(tmp_path, monkeypatch):
    monkeypatch.setattr(packaged, "DEFAULT_MODEL", tmp_path)
    with pytest.raises(VidgenError, match="no embedded default model"):
        packaged.default_model()
    (tmp_path / "vidgen.json").write_text("{}")
    assert packaged.default_model() == tmp_path
