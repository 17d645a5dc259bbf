import numpy as np
import pytest
from hypothesis import settings

# the same examples on every run: a property test that fails must fail again, in CI and on a fresh clone
settings.register_profile("deterministic", derandomize=True)
settings.load_profile("deterministic")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
