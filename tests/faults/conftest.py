"""Fixtures of the fault suite: one ``cueapi serve`` subprocess shared by a module's receiver
cases (each case also proves the server still serves other cues), and a well-behaved receiver."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Receiver
from tests.faults.harness import Serve


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    with Serve.start(tmp_path_factory.mktemp("serve") / "faults.db") as s:
        yield s


@pytest.fixture(scope="module")
def good() -> Iterator[Receiver]:
    """A receiver that answers 200 at once: the other cues a fault must not disturb."""
    r = Receiver()
    yield r
    r.close()
