"""The local test Hub (tests/hub_server.py) round-trips through the unmodified huggingface_hub / transformers / timm.

Every check goes through the real client against the `hub` fixture; the server's request log is only used to
prove which protocol path (e.g. LFS upload) the client took.
"""

import json
import os

import pytest
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

CONFIG_MAIN = {"kind": "ticket", "sparsity": 0.5}
CONFIG_DEV = {"kind": "ticket", "sparsity": 0.8}
WEIGHTS = bytes(range(256)) * 3  # 768 bytes, binary: must travel through LFS
README = "---\nlicense: apache-2.0\n---\n# test ticket\n"


@pytest.fixture(autouse=True)
def _no_server_crashes(hub):
    """A handler crash is answered with a 500 the client may retry past; make it fail the test instead."""
    yield
    assert hub.server.errors == []


def _write_folder(folder, config):
    os.makedirs(folder / "sub", exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "README.md").write_text(README)
    (folder / "weights.safetensors").write_bytes(WEIGHTS)
    (folder / "sub" / "notes.txt").write_text("nested file\n")
    return folder


@pytest.fixture(scope="module")
def pushed(hub, tmp_path_factory):
    """A repo with `main` (upload_folder) and a `dev` branch carrying one more commit (create_commit)."""
    api = hub.api()
    repo_id = hub.create_repo("roundtrip")
    seen = len(hub.server.requests)
    main_commit = api.upload_folder(
        repo_id=repo_id, folder_path=_write_folder(tmp_path_factory.mktemp("push"), CONFIG_MAIN),
        commit_message="first upload",
    )
    upload_requests = hub.server.requests[seen:]
    api.create_branch(repo_id, branch="dev", revision=main_commit.oid)
    dev_commit = api.create_commit(
        repo_id, revision="dev", commit_message="dev config",
        operations=[CommitOperationAdd("config.json", json.dumps(CONFIG_DEV).encode())],
    )
    return {"repo_id": repo_id, "main": main_commit.oid, "dev": dev_commit.oid, "upload_requests": upload_requests}


def test_upload_folder_uses_lfs_for_binary_and_regular_for_text(hub, pushed):
    methods_paths = [(m, p.split("?")[0]) for m, p, _ in pushed["upload_requests"]]
    assert any(m == "POST" and p.endswith(".git/info/lfs/objects/batch") for m, p in methods_paths)
    assert any(m == "PUT" and p.startswith("/lfs-upload/") for m, p in methods_paths)
    assert all(status < 400 for _, _, status in pushed["upload_requests"])
    info = hub.api().model_info(pushed["repo_id"], revision=pushed["main"], files_metadata=True)
    siblings = {s.rfilename: s for s in info.siblings}
    assert siblings["weights.safetensors"].lfs is not None
    assert siblings["weights.safetensors"].lfs.size == len(WEIGHTS)
    assert siblings["config.json"].lfs is None and siblings["README.md"].lfs is None
    assert siblings["sub/notes.txt"].size == len("nested file\n")


def test_hf_hub_download_by_branch_and_by_commit(hub, pushed, tmp_path):
    repo_id = pushed["repo_id"]
    cache = tmp_path / "cache"
    main_cfg = hf_hub_download(repo_id, "config.json", cache_dir=cache)
    dev_cfg = hf_hub_download(repo_id, "config.json", revision="dev", cache_dir=cache)
    old_cfg = hf_hub_download(repo_id, "config.json", revision=pushed["main"], cache_dir=tmp_path / "c2")
    assert json.loads(open(main_cfg).read()) == CONFIG_MAIN
    assert json.loads(open(dev_cfg).read()) == CONFIG_DEV
    assert json.loads(open(old_cfg).read()) == CONFIG_MAIN
    assert pushed["dev"] in dev_cfg and pushed["main"] in main_cfg  # cache snapshots are keyed by X-Repo-Commit
    weights = hf_hub_download(repo_id, "weights.safetensors", revision=pushed["dev"], cache_dir=cache)
    assert open(weights, "rb").read() == WEIGHTS
    assert open(hf_hub_download(repo_id, "sub/notes.txt", cache_dir=cache)).read() == "nested file\n"


def test_snapshot_download_revision(hub, pushed, tmp_path):
    folder = snapshot_download(pushed["repo_id"], revision="dev", cache_dir=tmp_path)
    assert folder.endswith(pushed["dev"])
    assert json.loads(open(os.path.join(folder, "config.json")).read()) == CONFIG_DEV
    assert open(os.path.join(folder, "weights.safetensors"), "rb").read() == WEIGHTS
    assert open(os.path.join(folder, "sub", "notes.txt")).read() == "nested file\n"
    local = snapshot_download(pushed["repo_id"], revision=pushed["main"], local_dir=tmp_path / "local")
    assert json.loads(open(os.path.join(local, "config.json")).read()) == CONFIG_MAIN


def test_model_info_list_files_and_refs(hub, pushed):
    api, repo_id = hub.api(), pushed["repo_id"]
    files = {".gitattributes", "config.json", "README.md", "weights.safetensors", "sub/notes.txt"}
    info = api.model_info(repo_id, revision="dev")
    assert info.sha == pushed["dev"] and info.id == repo_id and info.private is False
    assert {s.rfilename for s in info.siblings} == files
    assert info.last_modified is not None and info.created_at is not None
    assert api.model_info(repo_id).sha == pushed["main"]
    assert set(api.list_repo_files(repo_id, revision="dev")) == files
    refs = api.list_repo_refs(repo_id)
    assert {b.name: b.target_commit for b in refs.branches} == {"main": pushed["main"], "dev": pushed["dev"]}
    assert refs.tags == []
    commits = api.list_repo_commits(repo_id, revision="dev")
    assert [c.commit_id for c in commits[:2]] == [pushed["dev"], pushed["main"]]
    assert commits[0].title == "dev config" and commits[-1].title == "initial commit"


def test_tree_listing_paginates_and_paths_info(hub, pushed):
    api, repo_id = hub.api(), pushed["repo_id"]
    top = {e.path for e in api.list_repo_tree(repo_id)}
    assert top == {".gitattributes", "config.json", "README.md", "weights.safetensors", "sub"}
    assert {e.path for e in api.list_repo_tree(repo_id, path_in_repo="sub")} == {"sub/notes.txt"}
    hub.server.tree_page_size = 2
    try:
        seen = len(hub.server.requests)
        entries = list(api.list_repo_tree(repo_id, recursive=True, revision="dev", expand=True))
        pages = [p for m, p, _ in hub.server.requests[seen:] if m == "GET" and "/tree/" in p]
    finally:
        hub.server.tree_page_size = 1000
    assert len(pages) == 3  # 6 entries (5 files + the folder) in pages of 2
    assert sorted(e.path for e in entries) == sorted(top - {"sub"} | {"sub", "sub/notes.txt"})
    last = {e.path: e.last_commit.oid for e in entries}
    assert last["config.json"] == pushed["dev"] and last["README.md"] == pushed["main"]
    info = api.get_paths_info(repo_id, ["weights.safetensors", "sub", "missing.txt"], revision="dev")
    assert [type(i).__name__ for i in info] == ["RepoFile", "RepoFolder"]
    assert info[0].lfs.size == len(WEIGHTS)
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree(repo_id, path_in_repo="nope"))


def test_missing_repo_revision_and_file(hub, pushed, tmp_path):
    api, repo_id = hub.api(), pushed["repo_id"]
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("lottery-test/does-not-exist")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(repo_id, revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo_id, "config.json", revision="no-such-branch", cache_dir=tmp_path)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_id, "missing.json", cache_dir=tmp_path)
    assert api.file_exists(repo_id, "config.json") and not api.file_exists(repo_id, "missing.json")
    assert api.repo_exists(repo_id) and not api.repo_exists("lottery-test/does-not-exist")


def test_create_repo_exist_ok_and_dataset_type(hub, tmp_path):
    api = hub.api()
    repo_id = hub.create_repo("exists")
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo(repo_id)
    assert err.value.response.status_code == 409
    assert api.create_repo(repo_id, exist_ok=True).repo_id == repo_id

    ds = hub.create_repo("data", repo_type="dataset")
    api.upload_file(path_or_fileobj=b"a,b\n1,2\n", path_in_repo="data/train.csv", repo_id=ds, repo_type="dataset")
    path = hf_hub_download(ds, "data/train.csv", repo_type="dataset", cache_dir=tmp_path)
    assert open(path).read() == "a,b\n1,2\n"
    assert "data/train.csv" in api.list_repo_files(ds, repo_type="dataset")
    assert api.dataset_info(ds).sha == api.list_repo_refs(ds, repo_type="dataset").branches[0].target_commit
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(ds)  # same id, wrong type


def test_token_is_required_for_writes(hub):
    anonymous = hub.api(token=None)
    with pytest.raises(HfHubHTTPError) as err:
        anonymous.create_repo(hub.new_repo_id("anon"))
    assert err.value.response.status_code == 401
    repo_id = hub.create_repo("guarded")
    before = hub.api().model_info(repo_id).sha
    with pytest.raises(HfHubHTTPError) as err:
        anonymous.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id)
    assert err.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError):
        anonymous.create_branch(repo_id, branch="sneaky")
    assert hub.api().model_info(repo_id).sha == before
    assert hub.api().whoami()["name"] == "testuser"
    with pytest.raises(HfHubHTTPError) as err:
        hub.api(token="hf_wrong_token").whoami()
    assert err.value.response.status_code == 401


def test_private_repo_needs_token_to_read(hub, tmp_path):
    repo_id = hub.create_repo("secret", private=True)
    hub.api().upload_file(path_or_fileobj=b'{"a": 1}', path_in_repo="config.json", repo_id=repo_id)
    assert hub.api().model_info(repo_id).private is True
    with pytest.raises(RepositoryNotFoundError):
        hub.api(token=None).model_info(repo_id)
    with pytest.raises(HfHubHTTPError):
        hf_hub_download(repo_id, "config.json", cache_dir=tmp_path, token=False)
    path = hf_hub_download(repo_id, "config.json", cache_dir=tmp_path, token=hub.token)
    assert json.loads(open(path).read()) == {"a": 1}


def test_commit_deletes_parent_check_tags_and_pull_requests(hub, tmp_path):
    api = hub.api()
    repo_id = hub.create_repo("ops")
    first = api.create_commit(repo_id, commit_message="add", operations=[
        CommitOperationAdd("a/x.txt", b"x"), CommitOperationAdd("a/y.txt", b"y"), CommitOperationAdd("b.txt", b"b"),
    ])
    second = api.create_commit(repo_id, commit_message="delete", parent_commit=first.oid,
                               operations=[CommitOperationDelete("a/"), CommitOperationDelete("b.txt")])
    assert set(api.list_repo_files(repo_id)) == {".gitattributes"}
    assert set(api.list_repo_files(repo_id, revision=first.oid)) == {".gitattributes", "a/x.txt", "a/y.txt", "b.txt"}
    with pytest.raises(HfHubHTTPError) as err:  # `first` is no longer the head of main
        api.create_commit(repo_id, commit_message="stale", parent_commit=first.oid,
                          operations=[CommitOperationAdd("c.txt", b"c")])
    assert err.value.response.status_code == 412
    with pytest.raises(EntryNotFoundError):
        api.delete_file("never-there.txt", repo_id)

    api.create_tag(repo_id, tag="v1", revision=first.oid)
    assert open(hf_hub_download(repo_id, "b.txt", revision="v1", cache_dir=tmp_path)).read() == "b"
    assert [(t.name, t.target_commit) for t in api.list_repo_refs(repo_id).tags] == [("v1", first.oid)]

    pr = api.upload_file(path_or_fileobj=b"proposal", path_in_repo="pr.txt", repo_id=repo_id, create_pr=True)
    assert pr.pr_revision == "refs/pr/1" and pr.pr_num == 1
    assert open(hf_hub_download(repo_id, "pr.txt", revision=pr.pr_revision, cache_dir=tmp_path)).read() == "proposal"
    assert "pr.txt" not in api.list_repo_files(repo_id)
    refs = api.list_repo_refs(repo_id, include_pull_requests=True)
    assert [(r.ref, r.target_commit) for r in refs.pull_requests] == [("refs/pr/1", pr.oid)]
    assert api.model_info(repo_id).sha == second.oid


def test_unchanged_files_are_not_recommitted(hub):
    api = hub.api()
    repo_id = hub.create_repo("noop")
    first = api.upload_file(path_or_fileobj=WEIGHTS, path_in_repo="w.bin", repo_id=repo_id)
    seen = len(hub.server.requests)
    again = api.upload_file(path_or_fileobj=WEIGHTS, path_in_repo="w.bin", repo_id=repo_id)
    assert again.oid == first.oid  # preupload reported the same oid -> the client skipped the commit
    later = hub.server.requests[seen:]
    assert any("/preupload/" in p for _, p, _ in later)
    assert not any("/commit/" in p or m == "PUT" for m, p, _ in later)  # batch says "stored": no re-upload


def test_transformers_round_trip(hub, tmp_path):
    import torch
    from transformers import AutoConfig, AutoModelForMaskedLM, BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    model = BertForMaskedLM(config)
    model.save_pretrained(tmp_path / "bert")
    repo_id = hub.create_repo("tiny-bert")
    api = hub.api()
    api.upload_folder(repo_id=repo_id, folder_path=tmp_path / "bert")
    api.create_branch(repo_id, branch="wide")
    api.upload_file(path_or_fileobj=json.dumps({**config.to_dict(), "hidden_size": 24}).encode(),
                    path_in_repo="config.json", repo_id=repo_id, revision="wide")

    assert AutoConfig.from_pretrained(repo_id, revision="wide").hidden_size == 24
    assert AutoConfig.from_pretrained(repo_id).hidden_size == 16
    loaded = AutoModelForMaskedLM.from_pretrained(repo_id)
    assert isinstance(loaded, BertForMaskedLM)
    expected, got = model.state_dict(), loaded.state_dict()
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


def test_timm_round_trip(hub):
    import timm
    import torch
    from timm.models import push_to_hf_hub

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=5, pretrained=False)
    repo_id = hub.new_repo_id("timm-resnet")
    push_to_hf_hub(model, repo_id, token=hub.token)
    assert {"config.json", "model.safetensors", "README.md"} <= set(hub.api().list_repo_files(repo_id))

    loaded = timm.create_model(f"hf-hub:{repo_id}", pretrained=True)
    assert loaded.num_classes == 5
    expected, got = model.state_dict(), loaded.state_dict()
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


def test_delete_branch_tag_and_repo(hub):
    api = hub.api()
    repo_id = hub.create_repo("doomed")
    api.create_branch(repo_id, branch="tmp")
    api.create_branch(repo_id, branch="tmp", exist_ok=True)
    api.create_tag(repo_id, tag="t1")
    api.delete_branch(repo_id, branch="tmp")
    api.delete_tag(repo_id, tag="t1")
    refs = api.list_repo_refs(repo_id)
    assert [b.name for b in refs.branches] == ["main"] and refs.tags == []
    with pytest.raises(HfHubHTTPError):
        api.delete_branch(repo_id, branch="main")
    api.delete_repo(repo_id)
    assert not api.repo_exists(repo_id)
    hub.api().create_repo(repo_id)  # the name is free again
    assert [b.name for b in api.list_repo_refs(repo_id).branches] == ["main"]
