import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
# strict rules: a channel rule that raises fails the test instead of quietly freezing groups
os.environ.setdefault("CGAP_STRICT", "1")

if os.environ.get("PYTEST_XDIST_WORKER"):  # `pytest -n 2`: one thread per worker, not 2 x 2 on 2 cores
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
