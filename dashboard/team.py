"""The dashboard as a team's host: importing a remote logdir into its local cache, and receiving runs
pushed over HTTP with a write token. The pages never know: both end as ordinary run folders.

    gradwatch ui --logdir s3://bucket/runs --cache ~/gw-cache      # import a bucket / shared folder
    gradwatch ui --logdir logs --write-token T                      # accept pushed runs into logs/

Read access (basic auth, or none) and write access (the token) are separate: the push endpoint takes
only the token, and the token opens nothing else.
"""

from __future__ import annotations

import hmac

from flask import jsonify, request

from gradwatch.trainer.runlog import schema, stores

from .config import Settings

# The segment and importer modules (pyarrow) load only where a dashboard imports or receives runs.
SEGMENTS_DIR = "segments"

# The largest segment a push may carry (a writer's catch-up after an outage is split well below it).
MAX_PUSH_BYTES = 512 * 1024 * 1024


def start_importer(settings: Settings):
    """The background importer of a remote logdir (None for a local one); one per cache folder, even
    under several workers (importer.ImporterThread's lock)."""
    if not settings.source:
        return None
    from gradwatch.trainer.runlog import importer
    store = stores.open_store(stores.classify(settings.source))
    return importer.ImporterThread(importer.Importer(store, settings.logdir)).start()


def _token_ok(settings: Settings) -> bool:
    header = request.headers.get("Authorization", "")
    given = header[7:] if header.startswith("Bearer ") else ""
    return bool(settings.write_token) and hmac.compare_digest(given.encode(), settings.write_token.encode())


def _refused():
    return jsonify(error="wrong or missing write token (Authorization: Bearer GRADWATCH_TOKEN)"), 403


def receive_segment(settings: Settings, run_id: str, rank_name: str, name: str, data: bytes) -> tuple[dict, int]:
    """Import one pushed segment into settings.logdir; (answer, HTTP status). Pure of Flask, for tests."""
    from gradwatch.trainer.runlog import importer, segment

    rank = segment.parse_rank(rank_name)
    if rank is None or not segment.parse_name(name) or not schema.is_valid_run_id(run_id):
        return {"error": f"not a segment path: {run_id}/{rank_name}/{name}"}, 400
    try:
        seg = segment.decode(data, name, where=f"pushed {run_id}/{rank_name}/{name}")
        if seg.run_id != run_id or seg.rank != rank:
            raise segment.SegmentError(f"pushed segment holds run {seg.run_id!r} rank {seg.rank}, "
                                       f"not {run_id} rank {rank}")
        with importer.folder_lock(settings.logdir):
            rows = importer.import_segment(settings.logdir, seg)
    except importer.SegmentGap as exc:
        return {"error": str(exc)}, 409  # an earlier segment is still coming: the writer retries
    except segment.SegmentError as exc:
        return {"error": str(exc)}, 400
    return {"rows": rows}, 200


def install_push(server, settings: Settings) -> None:
    """POST /api/segments/check and /api/segments/<run>/segments/<rank>/<name>, when a write token is set."""
    if not settings.write_token:
        return

    @server.route(stores.SEGMENT_API + "/check", methods=["POST"])
    def segments_check():
        return ("", 204) if _token_ok(settings) else _refused()

    @server.route(stores.SEGMENT_API + "/<run_id>/" + SEGMENTS_DIR + "/<rank_name>/<name>", methods=["POST"])
    def segments_push(run_id: str, rank_name: str, name: str):
        if not _token_ok(settings):
            return _refused()
        request.max_content_length = MAX_PUSH_BYTES  # a segment may exceed the app's callback-body limit
        if (request.content_length or 0) > MAX_PUSH_BYTES:
            return jsonify(error=f"segment larger than {MAX_PUSH_BYTES} bytes"), 413
        answer, status = receive_segment(settings, run_id, rank_name, name, request.get_data())
        return jsonify(answer), status


def is_push_path(path: str) -> bool:
    """Requests the write token authorises (basic auth does not apply to them)."""
    return path.startswith(stores.SEGMENT_API + "/")
