# ======================================================================================================================
# Local Hugging Face Hub for tests (tests/hub_server.py).
#
# This block must stay at the very top of the file: `huggingface_hub` reads HF_ENDPOINT, HF_HOME, HF_HUB_DISABLE_XET,
# HF_HUB_OFFLINE, ... into `huggingface_hub.constants` once, when it is first imported (and transformers / timm /
# datasets import it). So the environment is prepared here, at conftest import time, before any test module or
# fixture imports those libraries. Only *choosing* the port and setting variables happens eagerly; the server itself
# starts lazily, the first time a test asks for the `hub` fixture.
# ======================================================================================================================
import atexit
import os
import shutil
import socket
import sys
import tempfile


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_HUB_PORT = _free_loopback_port()
_HUB_ENDPOINT = f"http://127.0.0.1:{_HUB_PORT}"
_HF_HOME = tempfile.mkdtemp(prefix="lottery_rg_hf_home_")  # throw-away cache and token: never the user's real ones
atexit.register(shutil.rmtree, _HF_HOME, ignore_errors=True)

for _var in (
    "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ASSETS_CACHE", "HF_XET_CACHE",
    "HF_DATASETS_CACHE", "TRANSFORMERS_CACHE", "HUGGINGFACE_CO_STAGING", "HF_HUB_DISABLE_IMPLICIT_TOKEN",
):
    os.environ.pop(_var, None)
os.environ.update(
    HF_ENDPOINT=_HUB_ENDPOINT,
    HF_HOME=_HF_HOME,
    HF_HUB_DISABLE_XET="1",  # hf_xet is installed: without this, uploads would try the Xet protocol
    HF_HUB_DISABLE_TELEMETRY="1",
    HF_HUB_DISABLE_PROGRESS_BARS="1",
    HF_HUB_DISABLE_UPDATE_CHECK="1",
    HF_HUB_ETAG_TIMEOUT="5",
    HF_HUB_DOWNLOAD_TIMEOUT="30",
)
os.environ["NO_PROXY"] = ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1", "localhost"]))
os.environ["no_proxy"] = os.environ["NO_PROXY"]

if "huggingface_hub" in sys.modules:  # imported earlier (by a pytest plugin?): its constants are already frozen
    _constants = sys.modules.get("huggingface_hub.constants")
    if _constants is not None and _constants.ENDPOINT != _HUB_ENDPOINT:
        raise RuntimeError(
            "huggingface_hub was imported before tests/conftest.py could point it at the local test Hub "
            f"(ENDPOINT={_constants.ENDPOINT!r}); find what imports it first (e.g. a pytest plugin)."
        )

import pytest  # noqa: E402


class LocalHub:
    """What the `hub` fixture yields.

    Attributes:
        endpoint: ``http://127.0.0.1:<port>``, also in ``HF_ENDPOINT``, so ``HfApi()``, ``hf_hub_download``,
            ``from_pretrained("org/name")`` etc. reach this server without any argument.
        token: the accepted write token (``"hf_test_token"``, user ``"testuser"``). It is *not* stored in HF_HOME:
            pass it explicitly (``token=hub.token``) wherever auth is needed, so tests can check it is honoured.
        server: the :class:`tests.hub_server.HubServer` (``server.requests`` logs every request).
        storage: directory holding the server's repos and blobs.
    """

    def __init__(self, server, storage):
        self.server, self.storage = server, storage
        self.endpoint, self.token = server.endpoint, server.token

    def api(self, token=True):
        """``huggingface_hub.HfApi`` for this hub; ``token=True`` -> the test token, ``None``/``False`` -> anonymous."""
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.endpoint, token=self.token if token is True else (token or False))

    def new_repo_id(self, stem="repo", org="lottery-test"):
        """A repo id no other test has used (the server lives for the whole session)."""
        import uuid

        return f"{org}/{stem}-{uuid.uuid4().hex[:8]}"

    def create_repo(self, stem="repo", *, org="lottery-test", private=False, repo_type=None):
        """Create a fresh repo (with its initial .gitattributes commit on `main`) and return its id."""
        repo_id = self.new_repo_id(stem, org)
        self.api().create_repo(repo_id, private=private, repo_type=repo_type)
        return repo_id


@pytest.fixture(scope="session")
def hub(tmp_path_factory):
    """Session-wide local Hub on HF_ENDPOINT's port, storage in a pytest tmp dir; stopped at session end."""
    import huggingface_hub.constants

    if huggingface_hub.constants.ENDPOINT != _HUB_ENDPOINT:
        pytest.fail(f"huggingface_hub uses {huggingface_hub.constants.ENDPOINT}, not the test Hub {_HUB_ENDPOINT}")
    try:
        from tests.hub_server import HubServer
    except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
        from hub_server import HubServer

    storage = tmp_path_factory.mktemp("hub_storage")
    server = HubServer(str(storage), port=_HUB_PORT).start()
    try:
        yield LocalHub(server, storage)
    finally:
        server.stop()


# ======================================================================================================================
# End of the local Hub block.
# ======================================================================================================================
