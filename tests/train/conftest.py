"""A dozen-clip synthetic corpus, built once per test session (the same code as `make corpus`)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def dozen_corpus(tmp_path_factory):
    from train.corpus import build_corpus

    root = tmp_path_factory.mktemp("corpus")
    summary = build_corpus(root, seed=0, clips=12, duration=1.0, workers=2, progress=False)
    return root, summary
