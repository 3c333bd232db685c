"""HTTP push into the real `gradwatch ui --write-token`: a right token's run lands as an ordinary run
folder; a wrong one is refused at Run() start in one line; read and write access stay separate."""

from __future__ import annotations

import base64
import urllib.error
import urllib.request

import pytest

from gradwatch.trainer.run import Run, RunSetupError
from gradwatch.trainer.runlog import RunReader, list_runs

from .conftest import UiServer

TOKEN = "team-secret-1"


@pytest.fixture(scope="module")
def push_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("push")
    server = UiServer("--logdir", str(tmp / "logs"), "--write-token", TOKEN,
                      env={"GRADWATCH_CACHE_DIR": str(tmp / "dcache"), "GRADWATCH_USER": "viewer",
                           "GRADWATCH_PASSWORD": "pw"},
                      log=tmp / "ui.log")
    server.logdir = tmp / "logs"
    yield server
    server.stop()


def test_push_with_the_right_token_lands_as_a_run_folder(push_server, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADWATCH_SPOOL", str(tmp_path / "spool"))
    monkeypatch.setenv("GRADWATCH_TOKEN", TOKEN)
    with Run(push_server.url, name="pushed", config={"opt": "adam"}) as run:
        for step in range(30):
            run.log(step, loss=1.0 / (step + 1))
    entries = {e.run_id: e for e in list_runs(push_server.logdir)}
    assert entries[run.id].status == "finished" and entries[run.id].error is None
    with RunReader(push_server.logdir / run.id) as reader:
        assert list(reader.scalar_series("loss")["step"]) == list(range(30))
        assert reader.meta["config"] == {"opt": "adam"}
    assert not (tmp_path / "spool" / f"{run.id}-r00000").exists()  # all delivered


def test_a_wrong_token_is_refused_at_run_start_in_one_line(push_server, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADWATCH_SPOOL", str(tmp_path / "spool"))
    monkeypatch.setenv("GRADWATCH_TOKEN", "wrong")
    with pytest.raises(RunSetupError) as info:
        Run(push_server.url, name="refused")
    message = str(info.value)
    assert "refused the write token" in message and "\n" not in message
    names = {e.meta.get("name") for e in list_runs(push_server.logdir) if e.meta} if push_server.logdir.exists() else set()
    assert "refused" not in names  # nothing of the refused run reached the dashboard


def test_read_and_write_access_are_separate(push_server):
    def get(path, header):
        request = urllib.request.Request(push_server.url + path, headers=header)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert get("/", {"Authorization": f"Bearer {TOKEN}"}) == 401  # the write token opens no page
    basic = base64.b64encode(b"viewer:pw").decode()
    assert get("/", {"Authorization": f"Basic {basic}"}) == 200
    request = urllib.request.Request(push_server.url + "/api/segments/check", data=b"", method="POST",
                                     headers={"Authorization": f"Basic {basic}"})
    with pytest.raises(urllib.error.HTTPError) as info:  # reading rights push nothing
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 403


def test_receive_refuses_bad_and_early_segments_and_is_idempotent(tmp_path):
    from types import SimpleNamespace

    from gradwatch.dashboard.team import receive_segment
    from gradwatch.trainer.runlog import segment

    settings = SimpleNamespace(logdir=tmp_path / "logs")
    first = segment.encode("r1", 0, 1, 1, {"meta": ([1, 1], [("run_id", '"r1"'), ("status", '"running"')])})
    second = segment.encode("r1", 0, 2, 2, {"scalars": ([2], [(0, "loss", 1.0, 1.0, 0)])})
    name1, name2 = segment.segment_name(1, 1, first), segment.segment_name(2, 2, second)
    answer, status = receive_segment(settings, "r1", "r00000", name2, second)
    assert status == 409  # rank 0's first segment has not arrived: the writer retries later
    assert receive_segment(settings, "r1", "r00000", name1, first)[1] == 200
    assert receive_segment(settings, "r1", "r00000", name2, second) == ({"rows": 1}, 200)
    assert receive_segment(settings, "r1", "r00000", name2, second) == ({"rows": 0}, 200)  # a retry adds nothing
    assert receive_segment(settings, "r1", "r00000", name2, second[:-10])[1] == 400  # checksum
    assert receive_segment(settings, "other", "r00000", name1, first)[1] == 400  # holds another run
    assert receive_segment(settings, "..", "r00000", name1, first)[1] == 400
    assert receive_segment(settings, "r1", "rank0", name1, first)[1] == 400
