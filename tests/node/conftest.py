import pytest

from tests.node.node_process import NodeProcess


@pytest.fixture(scope="package")
def node(tmp_path_factory):
    """One node shared by the tests of this package (each test uses its own keys)."""
    with NodeProcess(tmp_path_factory.mktemp("node") / "data") as proc:
        yield proc
