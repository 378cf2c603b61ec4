"""A local stand-in for NDIF's service and the part of the Hugging Face hub nnsight's client reads,
for the tests of `--engine nnsight --remote` (issue 29). It speaks the protocol of nnsight's
`RemoteBackend` (nnsight 0.8, `intervention/backends/remote.py`):

- `GET /subscribe` upgrades to a websocket whose first text frame is `{"session_id": ID}`; the
  job's states follow as JSON `ResponseModel` frames (QUEUED, RUNNING), then COMPLETED as a binary
  frame (`ResponseModel.pickle()`, its `data` the `torch.save`d saves, zstd-compressed when the
  request asks) or ERROR with a description.
- `POST /request` (multipart: `data` = the `RequestModel` JSON, `blob` = the serialized trace, the
  key in the `ndif-api-key` header) answers RECEIVED, or 401 `{"detail": ...}` for a wrong key.
  The job runs in this process as NDIF's workers do: the model rebuilt from its model key, the trace
  deserialized against the model's persistent objects and executed, the saved values sent back.
- The hub: `GET /api/models/{org}/{name}[/revision/{rev}]` (nnsight canonicalizes the repo id) and
  `HEAD|GET /{org}/{name}/resolve/{rev}/{file}` (the client builds the model's skeleton from
  `config.json` and the tokenizer), served from local folders.

Usage: python ndif_stand_in.py --key KEY --repo ORG/NAME=DIR [--repo …] [--refuse ORG/NAME]
       [--rate-limited KEY]
It prints `port N` on its first line, then serves until killed. This is test code: one process,
no auth beyond the key, no queue.
"""

import argparse
import base64
import hashlib
import io
import json
import os
import queue
import socketserver
import sys
import threading
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer

COMMIT = "2" * 40
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

ARGS = None
SESSIONS = {}  # session id -> queue of (opcode, payload bytes), None ends the socket
MODELS = {}  # model key -> loaded nnsight model
LOCK = threading.Lock()


def ws_frame(opcode, payload):
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n < 1 << 16:
        head += bytes([126]) + n.to_bytes(2, "big")
    else:
        head += bytes([127]) + n.to_bytes(8, "big")
    return head + payload


def push(session, response, binary=False):
    q = SESSIONS.get(session)
    if q is None:
        return
    if binary:
        q.put((0x2, response.pickle()))
    else:
        q.put((0x1, response.model_dump_json(exclude={"data"}).encode()))


def run_job(job_id, request, blob):
    from nnsight.schema.request import RequestModel  # noqa: F401 - imported where the job runs
    from nnsight.schema.response import ResponseModel, Status
    from nnsight.tracing.tracer import dec, inc

    session = request.session_id
    push(session, ResponseModel(id=job_id, status=Status.QUEUED, description="queued (stand-in)"))
    try:
        import torch

        import_path, key = request.model_key.split(":", 1)
        key = json.loads(key)
        repo = key["repo_id"]
        if repo in ARGS.refuse:
            raise RuntimeError(f"Model {repo} is not dedicated to NDIF and could not deploy (stand-in)")
        push(session, ResponseModel(id=job_id, status=Status.RUNNING, description="running (stand-in)"))
        with LOCK:
            model = MODELS.get(request.model_key)
            if model is None:
                from nnsight.modeling.mixins.remotable import Remotable

                # The checkpoint this "server" hosts under the repo id: its local folder.
                if repo not in ARGS.repos:
                    raise RuntimeError(f"Model {repo} is not hosted here (stand-in)")
                key["repo_id"] = ARGS.repos[repo]
                local_key = import_path + ":" + json.dumps(key)
                model = Remotable.from_model_key(local_key, device_map="cpu", dispatch=True, dtype=torch.float32)
                MODELS[request.model_key] = model
            tracer = RequestModel.deserialize(blob, model._remoteable_persistent_objects(), request.compress)
            frame = tracer.info.frame
            before = dict(frame.f_locals)
            inc()
            try:
                tracer.execute(tracer.info.code)
            finally:
                dec()
            saves = {k: v for k, v in frame.f_locals.items() if k not in before or before[k] is not v}
        buf = io.BytesIO()
        torch.save(saves, buf)
        data = buf.getvalue()
        if request.compress:
            import zstandard

            data = zstandard.ZstdCompressor(level=6).compress(data)
        push(session, ResponseModel(id=job_id, status=Status.COMPLETED, description="done (stand-in)", data=data), binary=True)
    except Exception as e:  # noqa: BLE001 - every failure is the job's ERROR, as NDIF sends it
        traceback.print_exc()
        push(session, ResponseModel(id=job_id, status=Status.ERROR, description=f"{type(e).__name__}: {e}"))
    q = SESSIONS.get(session)
    if q is not None:
        q.put(None)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("stand-in: " + (fmt % args) + "\n")

    def reply(self, code, body=b"", ctype="application/json", headers=None, head_only=False):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head_only:
            self.wfile.write(body)

    def hub_file(self, head_only):
        # /{org}/{name}/resolve/{rev}/{file}
        parts = self.path.split("?")[0].strip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return False
        repo, name = "/".join(parts[:2]), "/".join(parts[4:])
        folder = ARGS.repos.get(repo)
        path = os.path.join(folder, name) if folder else None
        if path is None or not os.path.isfile(path):
            self.reply(404, b'{"error": "Entry not found"}', headers={"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT}, head_only=head_only)
            return True
        with open(path, "rb") as f:
            body = f.read()
        etag = '"' + hashlib.sha256(body).hexdigest() + '"'
        self.reply(200, body, "application/octet-stream", {"X-Repo-Commit": COMMIT, "ETag": etag}, head_only)
        return True

    def do_HEAD(self):
        if not self.hub_file(True):
            self.reply(404, head_only=True)

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/subscribe":
            return self.subscribe()
        if path.startswith("/api/models/"):
            rest = path[len("/api/models/"):].split("/")
            repo = "/".join(rest[:2])
            if repo not in ARGS.repos:
                return self.reply(404, b'{"error": "Repository not found"}', headers={"X-Error-Code": "RepoNotFound"})
            if len(rest) > 3 and rest[2] == "tree":
                # A listing of the repository's root; sub-folders are empty.
                sub = "/".join(rest[4:])
                folder = ARGS.repos[repo]
                entries = [] if sub else [
                    {"type": "file", "path": f, "size": os.path.getsize(os.path.join(folder, f)), "oid": COMMIT}
                    for f in sorted(os.listdir(folder))
                ]
                return self.reply(200, json.dumps(entries).encode())
            files = sorted(os.listdir(ARGS.repos[repo]))
            info = {"id": repo, "modelId": repo, "sha": COMMIT, "siblings": [{"rfilename": f} for f in files]}
            return self.reply(200, json.dumps(info).encode())
        if not self.hub_file(False):
            self.reply(404, b'{"detail": "Not Found"}')

    def subscribe(self):
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        session = uuid.uuid4().hex
        q = queue.Queue()
        SESSIONS[session] = q
        self.wfile.write(ws_frame(0x1, json.dumps({"session_id": session}).encode()))
        self.wfile.flush()
        try:
            while True:
                item = q.get()
                if item is None:
                    break
                self.wfile.write(ws_frame(*item))
                self.wfile.flush()
            self.wfile.write(ws_frame(0x8, b"\x03\xe8"))
            self.wfile.flush()
        except OSError:
            pass
        finally:
            SESSIONS.pop(session, None)
            self.close_connection = True

    def do_POST(self):
        from email import policy
        from email.parser import BytesParser

        from nnsight.schema.request import RequestModel
        from nnsight.schema.response import ResponseModel, Status

        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path != "/request":
            return self.reply(404, b'{"detail": "Not Found"}')
        if self.headers.get("ndif-api-key") in ARGS.rate_limited:
            return self.reply(429, json.dumps({"detail": "Rate limit exceeded for this API key (stand-in)."}).encode())
        if self.headers.get("ndif-api-key") != ARGS.key:
            return self.reply(401, json.dumps({"detail": "The api key is invalid or missing (stand-in)."}).encode())
        message = BytesParser(policy=policy.HTTP).parsebytes(b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + body)
        fields = {}
        for part in message.iter_parts():
            fields[part.get_param("name", header="content-disposition")] = part.get_payload(decode=True)
        request = RequestModel.model_validate_json(fields["data"])
        job_id = uuid.uuid4().hex
        threading.Thread(target=run_job, args=(job_id, request, fields["blob"]), daemon=True).start()
        self.reply(200, ResponseModel(id=job_id, status=Status.RECEIVED, description="received (stand-in)").model_dump_json().encode())


class Server(socketserver.ThreadingMixIn, HTTPServer):
    daemon_threads = True


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--key", required=True)
    p.add_argument("--repo", action="append", default=[], help="ORG/NAME=DIR")
    p.add_argument("--refuse", action="append", default=[], help="a repo whose jobs fail as NDIF refuses an unhosted model")
    p.add_argument("--rate-limited", action="append", default=[], help="a key answered 429")
    ARGS = p.parse_args()
    ARGS.repos = dict(r.split("=", 1) for r in ARGS.repo)
    server = Server(("127.0.0.1", 0), Handler)
    print(f"port {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
