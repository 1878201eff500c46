from lumina.models.loading import load_official_transformer
from lumina.models.transformer_nextdit import LuminaNextDiTVideo

__all__ = ["LuminaNextDiTVideo", "load_official_transformer"]
