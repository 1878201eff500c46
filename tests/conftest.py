import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

GOLDEN = Path(__file__).resolve().parents[1].parent / "shared" / "golden" / "lumina-video-small"


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    if not GOLDEN.exists():
        pytest.skip(f"shared golden files not found at {GOLDEN}")
    return GOLDEN


@pytest.fixture(scope="session")
def random_pipeline_dir(tmp_path_factory) -> Path:
    from tests.builders import save_random_pipeline

    return save_random_pipeline(tmp_path_factory.mktemp("random_pipeline"))
