import pytest

from tests.node.node_process import NodeProcess


@pytest.fixture(scope="package")
def node(tmp_path_factory):
    with NodeProcess(tmp_path_factory.mktemp("cli-node") / "data") as proc:
        yield proc
