"""Shared fixtures. Tests never reach a model hub."""

import os
from typing import NamedTuple

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The smoke model's ops are tiny: on 2 shared cores one thread is several times faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class ApiKey(NamedTuple):
    env: str
    value: str


@pytest.fixture
def api_key(tmp_path, monkeypatch):
    """A user's API key in the environment, under a name the redaction rule knows (it ends in API_KEY).

    The test runs in ``tmp_path`` and fails if afterwards any file under it holds the key."""
    key = ApiKey("USER_API_KEY", "sk-user-0123456789abcdef")
    monkeypatch.setenv(key.env, key.value)
    monkeypatch.chdir(tmp_path)
    yield key
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert key.value.encode() not in path.read_bytes(), f"{path} holds the API key"
