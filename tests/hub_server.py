"""A small stand-in for the Hugging Face Hub HTTP API, for tests on 127.0.0.1.

Why this exists: the project's tests must push model folders through the *unmodified* ``huggingface_hub``
client and load them back with ``transformers`` / ``timm``, but no real Hub is reachable from the test machines and
no installable server implements the upload side (olah, used by test_hub_olah.py, serves downloads only). This
module speaks just enough
of the Hub's HTTP API for that round trip, written from the routes, payloads and headers the installed client uses
(``hf_api.py``, ``_commit_api.py``, ``lfs.py``, ``file_download.py``, ``utils/_http.py``).

Python standard library only. Storage layout under the directory given at start::

    blobs/<sha256[:2]>/<sha256>                 file contents, content-addressed, shared by all repos
    repos/<type>/<org>/<name>/repo.json         {"private", "createdAt", "refs": {"refs/heads/main": sha, ...}}
    repos/<type>/<org>/<name>/commits/<sha>.json  immutable snapshot: parents, message, date, author and
                                                  files = {path: {"sha256", "size", "lfs", "gitOid"}}

Supported: repo types model / dataset / space; create/delete repo; preupload; NDJSON commit (file, lfsFile,
deletedFile, deletedFolder, parentCommit, create_pr -> refs/pr/N); the basic LFS batch + PUT + verify transfer;
branches and tags; model/dataset/space info (``blobs=True`` adds sizes and LFS data); refs; commits; tree listing
(recursive, ``expand``, Link-header pagination); paths-info; HEAD/GET ``resolve`` with Range; whoami-v2;
validate-yaml (always valid). Not supported: Xet (set ``HF_HUB_DISABLE_XET=1``), multipart LFS, discussions,
gated repos, settings, YAML validation, short commit shas.

Authentication: a request whose ``Authorization: Bearer <token>`` names a known token acts as that user; an
unknown token gets 401 "Invalid credentials in Authorization header" (as on the Hub); no token means anonymous.
Every write needs a user; anonymous reads of private (or missing) repos get 401 ``RepoNotFound``, authenticated
reads of missing repos 404 ``RepoNotFound``.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import os
import re
import secrets
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

TEST_TOKEN = "hf_test_token"
TEST_USER = "testuser"
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024  # the Hub sends anything bigger than 10 MB to LFS
TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
SHA_RE = re.compile(r"[0-9a-f]{40}")

# Initial .gitattributes of a new repo: it decides which paths preupload answers "lfs" for, as on the Hub.
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z *.arrow *.bin *.bz2 *.ckpt *.ftz *.gz *.h5 *.joblib *.lz4 *.mlmodel *.model *.msgpack *.npy *.npz "
        "*.onnx *.ot *.parquet *.pb *.pickle *.pkl *.pt *.pth *.rar *.safetensors *.tar *.tflite *.tgz *.wasm "
        "*.xz *.zip *.zst *.png *.jpg *.jpeg *.gif *.webp *.wav *.mp3 *.flac *.ogg *tfevents*"
    ).split()
)


class HubError(Exception):
    """An HTTP error answered the way the client parses it: status, ``X-Error-Code`` and ``X-Error-Message``."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None,
                 body: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers, self.body = status, message, code, headers or {}, body


def git_blob_oid(data: bytes) -> str:
    """The git object id of a blob (what ``git hash-object`` prints); the Hub's ETag of a regular file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The small text file git stores in place of an LFS object; its git oid is the ``oid`` the Hub reports."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def now_iso() -> str:
    """UTC time in the one format ``huggingface_hub.utils.parse_datetime`` accepts."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


class Store:
    """Repositories on disk. All mutations hold ``self.lock`` (the HTTP server is threaded)."""

    def __init__(self, root: str):
        self.root = root
        self.lock = threading.RLock()
        os.makedirs(os.path.join(root, "blobs"), exist_ok=True)

    # -- blobs ----------------------------------------------------------------------------------------------------
    def blob_path(self, sha256: str) -> str:
        return os.path.join(self.root, "blobs", sha256[:2], sha256)

    def has_blob(self, sha256: str, size: int | None = None) -> bool:
        path = self.blob_path(sha256)
        return os.path.isfile(path) and (size is None or os.path.getsize(path) == size)

    def put_blob(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        if not self.has_blob(sha256):
            _atomic_write(self.blob_path(sha256), data)
        return sha256

    def read_blob(self, sha256: str) -> bytes:
        with open(self.blob_path(sha256), "rb") as f:
            return f.read()

    # -- repos and commits ----------------------------------------------------------------------------------------
    def repo_dir(self, rtype: str, repo_id: str) -> str:
        return os.path.join(self.root, "repos", rtype, *repo_id.split("/"))

    def load_repo(self, rtype: str, repo_id: str) -> dict | None:
        path = os.path.join(self.repo_dir(rtype, repo_id), "repo.json")
        if not os.path.isfile(path):
            return None
        with open(path) as f:
            return json.load(f)

    def save_repo(self, rtype: str, repo_id: str, meta: dict) -> None:
        _atomic_write(os.path.join(self.repo_dir(rtype, repo_id), "repo.json"), json.dumps(meta).encode())

    def load_commit(self, rtype: str, repo_id: str, sha: str) -> dict | None:
        path = os.path.join(self.repo_dir(rtype, repo_id), "commits", sha + ".json")
        if not os.path.isfile(path):
            return None
        with open(path) as f:
            return json.load(f)

    def write_commit(self, rtype, repo_id, parents, files, title, description="", author=TEST_USER) -> str:
        """Store an immutable snapshot and return its (unique) sha; refs are moved by the caller."""
        commit = {"parents": parents, "title": title, "description": description, "author": author,
                  "date": now_iso(), "files": files}
        sha = hashlib.sha1(json.dumps(commit, sort_keys=True).encode() + secrets.token_bytes(8)).hexdigest()
        path = os.path.join(self.repo_dir(rtype, repo_id), "commits", sha + ".json")
        _atomic_write(path, json.dumps(commit).encode())
        return sha

    def file_entry(self, data: bytes, lfs: bool) -> dict:
        """Store ``data`` and describe it as a file of a commit (``gitOid`` is the pointer's oid for LFS)."""
        sha256 = self.put_blob(data)
        git_oid = git_blob_oid(lfs_pointer(sha256, len(data)) if lfs else data)
        return {"sha256": sha256, "size": len(data), "lfs": lfs, "gitOid": git_oid}


def _atomic_write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{secrets.token_hex(4)}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _matches(patterns: list[str], path: str) -> bool:
    """Approximate gitattributes/gitignore matching: patterns without '/' match the basename."""
    name = path.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(path if "/" in p else name, p.lstrip("/")) for p in patterns)


class Handler(BaseHTTPRequestHandler):
    """Routes one request. ``self.server.hub`` is the owning :class:`HubServer`."""

    protocol_version = "HTTP/1.1"  # keep-alive; every response carries a Content-Length

    # -- plumbing -------------------------------------------------------------------------------------------------
    def do_GET(self):
        self._handle("GET")

    def do_HEAD(self):
        self._handle("HEAD")

    def do_POST(self):
        self._handle("POST")

    def do_PUT(self):
        self._handle("PUT")

    def do_DELETE(self):
        self._handle("DELETE")

    def log_message(self, format, *args):  # keep pytest output clean; requests are recorded in hub.requests
        pass

    def _handle(self, method: str) -> None:
        self.method = method
        self.body = self._read_body()  # always consume the body so keep-alive connections stay in sync
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        self.base = f"http://{self.headers.get('Host', '{}:{}'.format(*self.server.server_address[:2]))}"
        status = 500
        try:
            status, body, headers = self._route(method, [s for s in url.path.split("/") if s])
        except HubError as e:
            status, headers = e.status, {**e.headers, "X-Error-Message": e.message}
            if e.code:
                headers["X-Error-Code"] = e.code
            body = {"error": e.message, **(e.body or {})}
        except Exception as e:  # a bug here should surface as a 500 (kept in hub.errors), not a hung client
            self.server.hub.errors.append(traceback.format_exc())
            status, headers, body = 500, {"X-Error-Message": "internal error"}, {"error": f"{type(e).__name__}: {e}"}
        self.server.hub.requests.append((method, self.path, status))
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json; charset=utf-8")
        self.send_response(status)
        for key, value in headers.items():  # header values must be latin-1; paths in messages may not be
            self.send_header(key, str(value).encode("latin-1", "replace").decode("latin-1"))
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(body)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailers
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _json(self) -> dict:
        try:
            return json.loads(self.body or b"{}")
        except ValueError:
            raise HubError(400, "Body is not valid JSON") from None

    # -- auth and lookups -----------------------------------------------------------------------------------------
    def _user(self, required: bool = False) -> str | None:
        auth = self.headers.get("Authorization")
        if not auth:
            if required:
                raise HubError(401, "You must be authenticated (Authorization: Bearer <token>) to do this")
            return None
        user = self.server.hub.tokens.get(auth.removeprefix("Bearer ").strip())
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return user

    def _repo(self, rtype: str, repo_id: str, write: bool = False) -> dict:
        user = self._user(required=write)
        meta = self.server.hub.store.load_repo(rtype, repo_id)
        if meta is None or (meta["private"] and user is None):
            raise HubError(404 if user else 401, "Repository not found", "RepoNotFound")
        return meta

    def _resolve(self, rtype: str, repo_id: str, meta: dict, rev: str | None) -> str:
        """Branch, tag, full ref name (refs/heads/x, refs/tags/x, refs/pr/N) or full commit sha -> commit sha."""
        rev = rev or "main"
        for ref in (rev, f"refs/heads/{rev}", f"refs/tags/{rev}"):
            if ref in meta["refs"]:
                return meta["refs"][ref]
        if SHA_RE.fullmatch(rev) and self.server.hub.store.load_commit(rtype, repo_id, rev) is not None:
            return rev
        raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")

    def _files(self, rtype: str, repo_id: str, sha: str) -> dict:
        return self.server.hub.store.load_commit(rtype, repo_id, sha)["files"]

    # -- routing --------------------------------------------------------------------------------------------------
    def _route(self, method: str, segs: list[str]):
        if segs[:1] == ["api"]:
            rest = segs[1:]
            if rest == ["whoami-v2"] and method == "GET":
                return self._whoami()
            if rest == ["repos", "create"] and method == "POST":
                return self._create_repo()
            if rest == ["repos", "delete"] and method == "DELETE":
                return self._delete_repo()
            if rest == ["validate-yaml"] and method == "POST":
                return 200, {"errors": [], "warnings": []}, {}
            if len(rest) >= 3 and rest[0] in TYPES:
                rtype, repo_id = TYPES[rest[0]], f"{rest[1]}/{rest[2]}"
                action, args = (rest[3] if len(rest) > 3 else None), [unquote(s) for s in rest[4:]]
                return self._api(method, rtype, repo_id, action, args)
        elif segs[:1] == ["lfs-upload"] and method == "PUT" and len(segs) == 3:
            return self._lfs_put(segs[1], segs[2])
        elif segs[:1] == ["lfs-verify"] and method == "POST" and len(segs) == 2:
            return self._lfs_verify(segs[1])
        else:
            rtype = "model"
            if segs[:1] in (["datasets"], ["spaces"]):
                rtype, segs = TYPES[segs[0]], segs[1:]
            if len(segs) == 6 and segs[1].endswith(".git") and segs[2:] == ["info", "lfs", "objects", "batch"]:
                if method == "POST":
                    return self._lfs_batch(rtype, f"{segs[0]}/{segs[1][:-4]}")
            if len(segs) >= 5 and segs[2] == "resolve" and method in ("GET", "HEAD"):
                return self._resolve_file(rtype, f"{segs[0]}/{segs[1]}", unquote(segs[3]),
                                          unquote("/".join(segs[4:])))
        raise HubError(404, f"Route not implemented by the test Hub: {method} {self.path}")

    def _api(self, method, rtype, repo_id, action, args):
        if action is None and method == "GET":
            return self._info(rtype, repo_id, None)
        if action == "revision" and method == "GET" and args:
            return self._info(rtype, repo_id, "/".join(args))
        if action == "refs" and method == "GET":
            return self._refs(rtype, repo_id)
        if action == "commits" and method == "GET" and args:
            return self._commits(rtype, repo_id, "/".join(args))
        if action == "tree" and method == "GET" and args:
            return self._tree(rtype, repo_id, args[0], "/".join(args[1:]).strip("/"))
        if action == "paths-info" and method == "POST" and args:
            return self._paths_info(rtype, repo_id, "/".join(args))
        if action == "preupload" and method == "POST" and args:
            return self._preupload(rtype, repo_id, "/".join(args))
        if action == "commit" and method == "POST" and args:
            return self._commit(rtype, repo_id, "/".join(args))
        if action in ("branch", "tag") and method in ("POST", "DELETE") and args:
            return self._ref_change(method, action, rtype, repo_id, "/".join(args))
        raise HubError(404, f"Route not implemented by the test Hub: {method} {self.path}")

    # -- account and repos ----------------------------------------------------------------------------------------
    def _whoami(self):
        user = self._user(required=True)
        return 200, {"type": "user", "id": user, "name": user, "fullname": user, "orgs": [],
                     "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}}}, {}

    def _create_repo(self):
        user = self._user(required=True)
        payload = self._json()
        rtype = payload.get("type") or "model"
        if rtype not in URL_PREFIX:
            raise HubError(400, f"Invalid repo type: {rtype}")
        repo_id = f"{payload.get('organization') or user}/{payload['name']}"
        url = f"{self.base}/{URL_PREFIX[rtype]}{repo_id}"
        store = self.server.hub.store
        with store.lock:
            if store.load_repo(rtype, repo_id) is not None:
                # create_repo(exist_ok=True) still reads `url` from the body of this 409
                raise HubError(409, f"You already created this {rtype} repo: {repo_id}", body={"url": url})
            private = payload.get("visibility", "private" if payload.get("private") else "public") != "public"
            files = {".gitattributes": store.file_entry(DEFAULT_GITATTRIBUTES.encode(), lfs=False)}
            sha = store.write_commit(rtype, repo_id, [], files, "initial commit", author=user)
            store.save_repo(rtype, repo_id, {"private": private, "createdAt": now_iso(),
                                             "refs": {"refs/heads/main": sha}})
        return 200, {"url": url, "name": repo_id, "id": repo_id}, {}

    def _delete_repo(self):
        user = self._user(required=True)
        payload = self._json()
        rtype, repo_id = payload.get("type") or "model", f"{payload.get('organization') or user}/{payload['name']}"
        store = self.server.hub.store
        with store.lock:
            self._repo(rtype, repo_id, write=True)
            path = store.repo_dir(rtype, repo_id)
            os.replace(path, f"{path}.deleted-{secrets.token_hex(4)}")
        return 200, {}, {}

    def _info(self, rtype, repo_id, rev):
        meta = self._repo(rtype, repo_id)
        sha = self._resolve(rtype, repo_id, meta, rev)
        commit = self.server.hub.store.load_commit(rtype, repo_id, sha)
        with_blobs = self.query.get("blobs", ["false"])[0].lower() == "true"
        siblings = []
        for path, f in sorted(commit["files"].items()):
            sibling = {"rfilename": path}
            if with_blobs:
                sibling.update(size=f["size"], blobId=f["gitOid"])
                if f["lfs"]:
                    sibling["lfs"] = {"sha256": f["sha256"], "size": f["size"],
                                      "pointerSize": len(lfs_pointer(f["sha256"], f["size"]))}
            siblings.append(sibling)
        info = {"_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "id": repo_id, "author": repo_id.split("/")[0],
                "sha": sha, "lastModified": commit["date"], "createdAt": meta["createdAt"], "private": meta["private"],
                "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [], "siblings": siblings,
                "usedStorage": sum(f["size"] for f in commit["files"].values())}
        if rtype == "model":
            info["modelId"] = repo_id
        return 200, info, {}

    def _refs(self, rtype, repo_id):
        meta = self._repo(rtype, repo_id)
        out = {"branches": [], "tags": [], "converts": [], "pullRequests": []}
        for ref, sha in sorted(meta["refs"].items()):
            kind, name = {"heads": ("branches", ref[11:]), "tags": ("tags", ref[10:])}.get(
                ref.split("/")[1], ("pullRequests", ref))
            out[kind].append({"name": name, "ref": ref, "targetCommit": sha})
        if "include_prs" not in self.query:
            del out["pullRequests"]
        return 200, out, {}

    def _commits(self, rtype, repo_id, rev):
        meta = self._repo(rtype, repo_id)
        sha, out, store = self._resolve(rtype, repo_id, meta, rev), [], self.server.hub.store
        while sha:  # first-parent history, newest first, in one page
            c = store.load_commit(rtype, repo_id, sha)
            out.append({"id": sha, "authors": [{"user": c["author"]}], "date": c["date"], "title": c["title"],
                        "message": c["description"], "formatted": {"title": c["title"], "message": c["description"]}})
            sha = c["parents"][0] if c["parents"] else None
        return 200, out, {}

    # -- tree listing -------------------------------------------------------------------------------------------
    def _entry(self, rtype, repo_id, sha, files, path, expand):
        """A tree / paths-info item for ``path`` (a file or a directory) at commit ``sha``; None if absent."""
        if path in files:
            f = files[path]
            item = {"type": "file", "oid": f["gitOid"], "size": f["size"], "path": path}
            if f["lfs"]:
                item["lfs"] = {"oid": f["sha256"], "size": f["size"],
                               "pointerSize": len(lfs_pointer(f["sha256"], f["size"]))}
        else:
            inside = sorted((p, f["gitOid"]) for p, f in files.items() if p.startswith(path + "/"))
            if not inside:
                return None
            item = {"type": "directory", "oid": hashlib.sha1(json.dumps(inside).encode()).hexdigest(), "size": 0,
                    "path": path}
        if expand:
            item["lastCommit"] = self._last_commit(rtype, repo_id, sha, path, item["oid"])
        return item

    def _last_commit(self, rtype, repo_id, sha, path, oid):
        """Walk first parents while ``path`` keeps the same oid: the oldest such commit last touched it."""
        store = self.server.hub.store
        commit = store.load_commit(rtype, repo_id, sha)
        while commit["parents"]:
            parent_sha = commit["parents"][0]
            parent_files = store.load_commit(rtype, repo_id, parent_sha)["files"]
            before = self._entry(rtype, repo_id, parent_sha, parent_files, path, expand=False)
            if before is None or before["oid"] != oid:
                break
            sha, commit = parent_sha, store.load_commit(rtype, repo_id, parent_sha)
        return {"id": sha, "title": commit["title"], "date": commit["date"]}

    def _tree(self, rtype, repo_id, rev, path):
        meta = self._repo(rtype, repo_id)
        sha = self._resolve(rtype, repo_id, meta, rev)
        files = self._files(rtype, repo_id, sha)
        recursive = self.query.get("recursive", ["false"])[0].lower() == "true"
        expand = self.query.get("expand", ["false"])[0].lower() == "true"
        prefix = path + "/" if path else ""
        if path and not any(p.startswith(prefix) for p in files):
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": sha})
        children = set()
        for p in files:
            if p.startswith(prefix):
                parts = p[len(prefix):].split("/")
                depth = len(parts) if recursive else 1
                children.update(prefix + "/".join(parts[: i + 1]) for i in range(depth))
        # Hub pages are capped (1000 items, 50 with expand); the client follows the `Link: <...>; rel="next"` header.
        page_size = self.server.hub.tree_page_size if not expand else min(50, self.server.hub.tree_page_size)
        start = int(self.query.get("cursor", ["0"])[0])
        names = sorted(children)
        items = [self._entry(rtype, repo_id, sha, files, p, expand) for p in names[start : start + page_size]]
        headers = {"X-Repo-Commit": sha}
        if start + page_size < len(names):
            query = {k: v[0] for k, v in self.query.items()}
            query["cursor"] = str(start + page_size)
            headers["Link"] = f'<{self.base}{urlsplit(self.path).path}?{urlencode(query)}>; rel="next"'
        return 200, items, headers

    def _paths_info(self, rtype, repo_id, rev):
        meta = self._repo(rtype, repo_id)
        sha = self._resolve(rtype, repo_id, meta, rev)
        files = self._files(rtype, repo_id, sha)
        form = parse_qs(self.body.decode()) if self.body else {}
        expand = form.get("expand", ["False"])[0].lower() == "true"
        items = [self._entry(rtype, repo_id, sha, files, p.strip("/"), expand) for p in form.get("paths", [])]
        return 200, [item for item in items if item is not None], {}

    # -- uploads ------------------------------------------------------------------------------------------------
    def _preupload(self, rtype, repo_id, rev):
        """Tell the client, per file, whether to send it inline ("regular") or through LFS, as the Hub does:
        LFS if bigger than 10 MB, matched by a ``filter=lfs`` line of the revision's .gitattributes, or binary
        (a NUL byte in the first 512 bytes). ``oid`` lets the client skip unchanged files."""
        meta = self._repo(rtype, repo_id, write=True)
        files = self._files(rtype, repo_id, self._resolve(rtype, repo_id, meta, rev))
        lfs_patterns, ignore = [], [p for p in self._json().get("gitIgnore", "").splitlines() if p.strip()]
        if ".gitattributes" in files:
            attributes = self.server.hub.store.read_blob(files[".gitattributes"]["sha256"]).decode(errors="replace")
            lfs_patterns = [ln.split()[0] for ln in attributes.splitlines() if "filter=lfs" in ln.split()[1:]]
        answer = []
        for f in self._json()["files"]:
            sample = base64.b64decode(f.get("sample", ""))
            lfs = f["size"] > LFS_SIZE_THRESHOLD or _matches(lfs_patterns, f["path"]) or b"\0" in sample
            existing = files.get(f["path"])
            oid = None
            if existing is not None:
                oid = existing["sha256"] if lfs else (existing["gitOid"] if not existing["lfs"] else None)
            answer.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular",
                           "shouldIgnore": _matches(ignore, f["path"]), "oid": oid})
        return 200, {"files": answer, "commitOid": None}, {}

    def _lfs_batch(self, rtype, repo_id):
        """git-lfs batch API, "basic" transfer only: objects already stored come back without ``actions``."""
        self._repo(rtype, repo_id, write=True)
        payload = self._json()
        if payload.get("operation") != "upload":
            raise HubError(400, "The test Hub only implements LFS uploads")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj["oid"], obj["size"]
            item = {"oid": oid, "size": size}
            if not self.server.hub.store.has_blob(oid, size):
                ticket = secrets.token_hex(16)  # the PUT carries no Authorization header, like a signed S3 URL
                self.server.hub.lfs_tickets[ticket] = (oid, size)
                item["authenticated"] = True
                item["actions"] = {"upload": {"href": f"{self.base}/lfs-upload/{oid}/{ticket}"},
                                   "verify": {"href": f"{self.base}/lfs-verify/{oid}"}}
            objects.append(item)
        return 200, {"transfer": "basic", "objects": objects}, {"Content-Type": "application/vnd.git-lfs+json"}

    def _lfs_put(self, oid, ticket):
        expected = self.server.hub.lfs_tickets.pop(ticket, None)
        if expected is None or expected[0] != oid:
            raise HubError(403, "Unknown or used LFS upload ticket")
        if hashlib.sha256(self.body).hexdigest() != oid or len(self.body) != expected[1]:
            raise HubError(400, "Uploaded content does not match the announced sha256/size")
        self.server.hub.store.put_blob(self.body)
        return 200, b"", {"ETag": f'"{oid}"'}

    def _lfs_verify(self, oid):
        self._user(required=True)
        size = self._json().get("size")
        if not self.server.hub.store.has_blob(oid, size):
            raise HubError(404, f"LFS object {oid} was not uploaded")
        return 200, {"success": True}, {}

    def _commit(self, rtype, repo_id, rev):
        """Apply an NDJSON commit (header, file, lfsFile, deletedFile, deletedFolder) on top of a branch head."""
        user = self._user(required=True)
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        header = next((ln["value"] for ln in lines if ln["key"] == "header"), None)
        if header is None or not header.get("summary"):
            raise HubError(400, "The commit needs a header line with a summary")
        store = self.server.hub.store
        with store.lock:
            meta = self._repo(rtype, repo_id, write=True)
            head = self._resolve(rtype, repo_id, meta, rev)
            if self.query.get("create_pr", ["0"])[0] in ("1", "true", "True"):
                number = 1 + sum(ref.startswith("refs/pr/") for ref in meta["refs"])
                ref = f"refs/pr/{number}"
            else:
                ref = rev if rev.startswith(("refs/heads/", "refs/pr/")) else f"refs/heads/{rev}"
                if ref not in meta["refs"]:
                    raise HubError(400, f"Can only commit to a branch, not to '{rev}'")
                number = None
            if header.get("parentCommit") and header["parentCommit"] != head:
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(self._files(rtype, repo_id, head))
            for op in lines:
                key, value = op["key"], op["value"]
                if key == "file":
                    files[value["path"]] = store.file_entry(base64.b64decode(value["content"]), lfs=False)
                elif key == "lfsFile":
                    if not store.has_blob(value["oid"], value.get("size")):
                        raise HubError(422, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                    files[value["path"]] = store.file_entry(store.read_blob(value["oid"]), lfs=True)
                elif key == "deletedFile":
                    if files.pop(value["path"], None) is None:
                        raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    gone = [p for p in files if p.startswith(prefix)]
                    if not gone:
                        raise HubError(404, f"A folder with this name doesn't exist: {value['path']}", "EntryNotFound")
                    for p in gone:
                        del files[p]
                elif key != "header":
                    raise HubError(400, f"Unsupported commit operation: {key}")
            sha = store.write_commit(rtype, repo_id, [head], files, header["summary"],
                                     header.get("description", ""), author=user)
            meta["refs"][ref] = sha
            store.save_repo(rtype, repo_id, meta)
        repo_url = f"{self.base}/{URL_PREFIX[rtype]}{repo_id}"
        body = {"success": True, "commitOid": sha, "commitUrl": f"{repo_url}/commit/{sha}", "hookOutput": ""}
        if number is not None:
            body["pullRequestUrl"] = f"{repo_url}/discussions/{number}"
        return 200, body, {}

    def _ref_change(self, method, kind, rtype, repo_id, name):
        """create_branch (body ``startingPoint``), delete_branch, create_tag (URL names the revision, body
        ``tag``), delete_tag. Existing names give 409 like the Hub, so ``exist_ok`` works."""
        store = self.server.hub.store
        with store.lock:
            meta = self._repo(rtype, repo_id, write=True)
            if method == "POST":
                payload = self._json()
                if kind == "branch":
                    start = payload.get("startingPoint")
                    ref, target = f"refs/heads/{name}", self._resolve(rtype, repo_id, meta, start)
                else:
                    ref, target = f"refs/tags/{payload['tag']}", self._resolve(rtype, repo_id, meta, name)
                if ref in meta["refs"]:
                    raise HubError(409, f"Reference already exists: {ref}")
                meta["refs"][ref] = target
            else:
                ref = f"refs/{'heads' if kind == 'branch' else 'tags'}/{name}"
                if ref == "refs/heads/main":
                    raise HubError(403, "The main branch cannot be deleted")
                if ref not in meta["refs"]:
                    raise HubError(404, f"Invalid rev id: {name}", "RevisionNotFound")
                del meta["refs"][ref]
            store.save_repo(rtype, repo_id, meta)
        return 200, {}, {}

    # -- downloads ----------------------------------------------------------------------------------------------
    def _resolve_file(self, rtype, repo_id, rev, path):
        """HEAD/GET /{repo}/resolve/{rev}/{path}. The client needs ``X-Repo-Commit`` and an ETag (for LFS files
        ``X-Linked-Etag`` = sha256 and ``X-Linked-Size`` win); content is served directly, no CDN redirect."""
        meta = self._repo(rtype, repo_id)
        sha = self._resolve(rtype, repo_id, meta, rev)
        f = self._files(rtype, repo_id, sha).get(path)
        if f is None:
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": sha})
        headers = {"X-Repo-Commit": sha, "ETag": f'"{f["gitOid"]}"', "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream",
                   "Content-Disposition": f'inline; filename="{quote(path.rsplit("/", 1)[-1])}";'}
        if f["lfs"]:
            headers.update({"X-Linked-Etag": f'"{f["sha256"]}"', "X-Linked-Size": f["size"]})
        if self.method == "HEAD":
            return 200, b"", {**headers, "Content-Length": f["size"]}
        data = self.server.hub.store.read_blob(f["sha256"])
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if match and (match[1] or match[2]):
            start = int(match[1]) if match[1] else max(0, len(data) - int(match[2]))
            end = int(match[2]) if match[1] and match[2] else len(data) - 1
            if start >= len(data):
                raise HubError(416, "Range not satisfiable", headers={"Content-Range": f"bytes */{len(data)}"})
            end = min(end, len(data) - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return 206, data[start : end + 1], headers
        return 200, data, headers


class HubServer:
    """The fake Hub on 127.0.0.1, served from a daemon thread.

    >>> server = HubServer("/tmp/hub-storage").start()   # port=0 picks a free port
    >>> server.endpoint, server.token
    ('http://127.0.0.1:54321', 'hf_test_token')
    >>> server.stop()

    ``requests`` records ``(method, raw path, status)`` of every request, so tests can check which routes the
    client really used (e.g. that an LFS PUT happened); ``errors`` keeps tracebacks of handler crashes (500s, which
    the client retries with backoff, so a server bug shows up as a slow test). ``tree_page_size`` can be lowered
    to exercise pagination.
    """

    def __init__(self, storage_dir: str, host: str = "127.0.0.1", port: int = 0, tokens: dict | None = None):
        self.store = Store(storage_dir)
        self.tokens = dict(tokens) if tokens is not None else {TEST_TOKEN: TEST_USER}
        self.token = next(iter(self.tokens), None)
        self.requests: list[tuple[str, str, int]] = []
        self.errors: list[str] = []  # tracebacks of requests that crashed the handler (answered with 500)
        self.lfs_tickets: dict[str, tuple[str, int]] = {}
        self.tree_page_size = 1000
        self._host, self._port = host, port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubServer:
        self._httpd = ThreadingHTTPServer((self._host, self._port), Handler)
        self._httpd.daemon_threads = True
        self._httpd.hub = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="test-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None
