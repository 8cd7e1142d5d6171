"""One emulated board (built once, cached) and its sshd for every board test in the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.board.emulated import BoardServer, BoardUnavailable, build


@pytest.fixture(scope="session")
def server() -> Iterator[BoardServer]:
    pytest.importorskip("paramiko", reason="paramiko is needed to reach the board")
    pytest.importorskip("tvm", reason="apache-tvm is needed to compile for the board")
    try:
        root = build()
    except BoardUnavailable as e:
        pytest.skip(f"emulated board unavailable: {e}")
    server = BoardServer(root)
    server.start()
    yield server
    server.close()


@pytest.fixture
def board(server: BoardServer):
    """The board, its sshd running (a test before may have stopped it)."""
    return server.start()
